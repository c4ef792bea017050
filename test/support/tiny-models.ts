/** Tiny configs of each registered denoiser class (8×8 grey images, 3 classes + "no class"): milliseconds a forward. */

export const TINY_UNET_ATTN = {
  _class_name: "UNet2DModel",
  in_channels: 1,
  out_channels: 1,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ["DownBlock2D", "AttnDownBlock2D"],
  up_block_types: ["AttnUpBlock2D", "UpBlock2D"],
  norm_num_groups: 4,
  num_class_embeds: 4,
  sample_size: 8,
};

export const TINY_DIT = {
  _class_name: "DiTTransformer2DModel",
  num_attention_heads: 2,
  attention_head_dim: 8,
  in_channels: 1,
  out_channels: 1,
  num_layers: 1,
  sample_size: 8,
  patch_size: 2,
  num_embeds_ada_norm: 3,
};

/** A text-conditioned U-Net (8-wide token embeddings), cross-attention in its outer blocks. */
export const TINY_UNET_COND = {
  _class_name: "UNet2DConditionModel",
  in_channels: 1,
  out_channels: 1,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  norm_num_groups: 4,
  cross_attention_dim: 8,
  attention_head_dim: 2,
  sample_size: 8,
};

/** An SD3 MM-DiT (8-wide text tokens, a 6-wide pooled vector), SD3.5's qk norm and one dual-attention block. */
export const TINY_SD3 = {
  _class_name: "SD3Transformer2DModel",
  in_channels: 1,
  out_channels: 1,
  sample_size: 8,
  patch_size: 2,
  num_layers: 2,
  num_attention_heads: 2,
  attention_head_dim: 4,
  joint_attention_dim: 8,
  caption_projection_dim: 8,
  pooled_projection_dim: 6,
  pos_embed_max_size: 4,
  dual_attention_layers: [0],
  qk_norm: "rms_norm",
};
