/**
 * Parameter counts of the standard building blocks, from their sizes alone: what a config's size
 * check (config-fields.ts `estimateParams`) adds up before anything is traced or allocated. The counts
 * are those of diffusers' modules; a model's estimate composes them without the exact skip widths,
 * so it is close (tests hold it within 10% of the traced count), not exact.
 */

/** A k×k convolution with bias. */
export const convParams = (cin: number, cout: number, k = 3): number => k * k * cin * cout + cout;

/** A linear layer (with bias unless told otherwise). */
export const linearParams = (cin: number, cout: number, bias = true): number =>
  cin * cout + (bias ? cout : 0);

/** A GroupNorm or LayerNorm with an affine scale and shift. */
export const normParams = (c: number): number => 2 * c;

/**
 * ResnetBlock2D: two norms and 3×3 convolutions, a projection of the time embedding (`temb` wide,
 * 0 for none; doubled for scale-shift), and a 1×1 shortcut when the width changes.
 */
export function resnetParams(cin: number, cout: number, temb: number, scaleShift = false): number {
  return (
    normParams(cin) +
    convParams(cin, cout) +
    (temb > 0 ? linearParams(temb, scaleShift ? 2 * cout : cout) : 0) +
    normParams(cout) +
    convParams(cout, cout) +
    (cin !== cout ? convParams(cin, cout, 1) : 0)
  );
}

/** A self-attention block over c channels: a norm, then query, key, value and output projections. */
export const selfAttentionParams = (c: number): number => normParams(c) + 4 * linearParams(c, c);

/**
 * Transformer2DModel of a cross-attention U-Net: norm, proj_in/out, and `depth` blocks of
 * self-attention, cross-attention (keys and values from `context`-wide text) and a GEGLU feed-forward.
 */
export function transformer2DParams(c: number, depth: number, context: number): number {
  const block =
    3 * normParams(c) +
    (3 * c * c + linearParams(c, c)) + // attn1: q, k, v without bias, out with
    (c * c + 2 * context * c + linearParams(c, c)) + // attn2
    linearParams(c, 8 * c) +
    linearParams(4 * c, c); // GEGLU feed-forward
  return normParams(c) + 2 * linearParams(c, c) + depth * block;
}
