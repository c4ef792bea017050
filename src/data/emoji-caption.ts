/**
 * The one caption template of the emoji data set (emoji.ts), and its inverse:
 *
 *   <name>[, <tone> skin tone | , <tone₁> and <tone₂> skin tones], <vendor> style
 *
 * e.g. "thumbs up sign, medium skin tone, google style" or "people holding hands, light and dark
 * skin tones, twitter style". `<name>` is emoji-datasource's `name` (the Unicode name) lower-cased;
 * the tones come from the Fitzpatrick modifier code points of a skin variation (Unicode TR51 §2.4:
 * U+1F3FB light … U+1F3FF dark, with CLDR's names); `<vendor>` is the image set. A two-person
 * variation whose two tones are equal reads as one tone ("light skin tone"), as the emoji that
 * take one modifier for both people do. The caption without its ", <vendor> style" part is the
 * emoji's identity: the same glyph in both styles.
 */

/** The image sets, in vendor-id order (twitter = 0, google = 1). */
export const EMOJI_VENDORS = ["twitter", "google"] as const;
export type EmojiVendor = (typeof EMOJI_VENDORS)[number];

/** CLDR's names of the five Fitzpatrick modifiers, U+1F3FB to U+1F3FF in order. */
export const SKIN_TONES = ["light", "medium-light", "medium", "medium-dark", "dark"] as const;
export type SkinTone = (typeof SKIN_TONES)[number];

/** The modifier code point (hex, upper case, as emoji.json writes it) of each tone. */
const TONE_CODES: Readonly<Record<string, SkinTone>> = {
  "1F3FB": "light",
  "1F3FC": "medium-light",
  "1F3FD": "medium",
  "1F3FE": "medium-dark",
  "1F3FF": "dark",
};

export interface EmojiCaptionParts {
  /** The lower-cased Unicode name, e.g. "thumbs up sign". */
  readonly name: string;
  /** No tone, one tone, or two (one per person, in the order of the sequence). */
  readonly tones?: readonly SkinTone[];
  readonly vendor: EmojiVendor;
}

/** The tones of a skin-variation key of emoji.json ("1F3FD", "1F3FB-1F3FF"). */
export function tonesOfKey(key: string): SkinTone[] {
  const tones = key.split("-").map((code) => {
    const tone = TONE_CODES[code.toUpperCase()];
    if (tone === undefined) {
      throw new Error(
        `skin variation "${key}": "${code}" is not a Fitzpatrick modifier (expected 1F3FB to 1F3FF)`,
      );
    }
    return tone;
  });
  if (tones.length < 1 || tones.length > 2) {
    throw new Error(`skin variation "${key}" has ${tones.length} modifiers; expected one or two`);
  }
  return tones.length === 2 && tones[0] === tones[1] ? [tones[0]!] : tones;
}

/** "<name>[, <tone> skin tone | , <t1> and <t2> skin tones]": the caption without the vendor. */
export function emojiIdentity(name: string, tones: readonly SkinTone[] = []): string {
  if (name.length === 0 || name !== name.trim()) {
    throw new Error(`emoji name ${JSON.stringify(name)} must be non-empty with no outer spaces`);
  }
  for (const t of tones) {
    if (!(SKIN_TONES as readonly string[]).includes(t)) {
      throw new Error(`unknown skin tone ${JSON.stringify(t)}; expected one of ${SKIN_TONES.join(", ")}`);
    }
  }
  if (tones.length === 0) return name;
  if (tones.length === 1 || (tones.length === 2 && tones[0] === tones[1])) {
    return `${name}, ${tones[0]} skin tone`;
  }
  if (tones.length === 2) return `${name}, ${tones[0]} and ${tones[1]} skin tones`;
  throw new Error(`an emoji has at most two skin tones, got ${tones.length} (${tones.join(", ")})`);
}

/** The caption of an emoji: e.g. `emojiCaption({ name: "thumbs up sign", tones: ["medium"], vendor: "google" })`. */
export function emojiCaption(parts: EmojiCaptionParts): string {
  if (!(EMOJI_VENDORS as readonly string[]).includes(parts.vendor)) {
    throw new Error(
      `unknown emoji vendor ${JSON.stringify(parts.vendor)}; expected ${EMOJI_VENDORS.join(" or ")}`,
    );
  }
  return `${emojiIdentity(parts.name, parts.tones ?? [])}, ${parts.vendor} style`;
}

const TONE = SKIN_TONES.join("|");
const ONE_TONE = new RegExp(`^(.+), (${TONE}) skin tone$`);
const TWO_TONES = new RegExp(`^(.+), (${TONE}) and (${TONE}) skin tones$`);
const VENDOR = new RegExp(`^(.+), (${EMOJI_VENDORS.join("|")}) style$`);

/**
 * Splits a caption of the template back into its parts (names may hold commas: "family: man,
 * woman, boy", so the tone and vendor parts are read from the end). Throws on any other text.
 */
export function parseEmojiCaption(caption: string): Required<EmojiCaptionParts> {
  const v = VENDOR.exec(caption);
  if (!v) {
    throw new Error(
      `${JSON.stringify(caption)} is not an emoji caption: it must end in ", twitter style" or ", google style"`,
    );
  }
  const vendor = v[2] as EmojiVendor;
  const rest = v[1]!;
  const two = TWO_TONES.exec(rest);
  if (two) return { name: two[1]!, tones: [two[2] as SkinTone, two[3] as SkinTone], vendor };
  const one = ONE_TONE.exec(rest);
  if (one) return { name: one[1]!, tones: [one[2] as SkinTone], vendor };
  return { name: rest, tones: [], vendor };
}
