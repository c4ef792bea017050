/**
 * The pieces of CLIP's byte-level BPE (Radford et al. 2021, "Learning Transferable Visual Models From
 * Natural Language Supervision"; the BPE of Sennrich et al. 2016 over GPT-2's byte alphabet), as
 * transformers' slow `CLIPTokenizer` runs them when `ftfy` is absent:
 *
 * 1. cleanup (`cleanClipText`): BERT's BasicTokenizer with `strip_accents=False, do_split_on_punc=False`:
 *    drop NUL, U+FFFD and every control/format/unassigned character (Unicode category C*) except
 *    \t \n \r; map \t \n \r and space separators (Zs) to " "; put spaces around CJK ideographs; NFC;
 *    split on whitespace; lower-case each word; join with single spaces.
 * 2. pre-tokenisation (`CLIP_PRETOKEN`): `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|
 *    \p{N}|[^\s\p{L}\p{N}]+`, case-insensitive: letter runs, single digits, punctuation/symbol runs.
 * 3. byte-to-unicode (`BYTE_TO_UNICODE`): each UTF-8 byte becomes one printable character, so that a
 *    BPE symbol never holds a space or a control byte (GPT-2's table: the 188 printable bytes map to
 *    themselves, the other 68 to U+0100…U+0143 in byte order).
 * 4. BPE (`ClipBpe.apply`): the word's characters, the last one with `</w>` appended; repeatedly merge
 *    the adjacent pair with the lowest merge rank, every occurrence left to right, until no pair has a
 *    rank. Results are cached per word (`<|startoftext|>` and `<|endoftext|>` map to themselves).
 */

/** transformers reads at most this many merges (`[1 : 49152 - 256 - 2 + 1]` of merges.txt's lines). */
export const CLIP_MAX_MERGES = 49152 - 256 - 2;
export const CLIP_WORD_END = "</w>";
export const CLIP_BOS_TEXT = "<|startoftext|>";
export const CLIP_EOS_TEXT = "<|endoftext|>";

/** GPT-2's `bytes_to_unicode`: byte b → one printable character; `BYTE_SYMBOLS[i]` in vocab id order. */
function byteTable(): { toChar: string[]; order: string[] } {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b); // ! … ~
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b); // ¡ … ¬
  for (let b = 0xae; b <= 0xff; b++) bs.push(b); // ® … ÿ
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const toChar = new Array<string>(256);
  for (let i = 0; i < 256; i++) toChar[bs[i]!] = String.fromCodePoint(cs[i]!);
  return { toChar, order: cs.map((c) => String.fromCodePoint(c)) };
}

const TABLE = byteTable();
/** byte → its symbol. */
export const BYTE_TO_UNICODE: readonly string[] = TABLE.toChar;
/** The 256 byte symbols in CLIP's vocab order (ids 0–255; ids 256–511 are the same with `</w>`). */
export const BYTE_SYMBOLS: readonly string[] = TABLE.order;
/** symbol (one UTF-16 unit: every symbol is below U+0144) → byte. */
export const UNICODE_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_UNICODE.map((c, b) => [c, b]));

const ENCODER = new TextEncoder();

/** A pre-token's UTF-8 bytes as byte symbols. */
export function byteEncode(piece: string): string {
  const bytes = ENCODER.encode(piece);
  let out = "";
  for (const b of bytes) out += BYTE_TO_UNICODE[b]!;
  return out;
}

/** Byte symbols (and `</w>` marks, read as spaces) back to text; bad UTF-8 becomes U+FFFD as Python's "replace". */
export function byteDecode(symbols: string): string {
  const text = symbols.replaceAll(CLIP_WORD_END, " ");
  const bytes: number[] = [];
  for (const ch of text) {
    const b = UNICODE_TO_BYTE.get(ch);
    if (b !== undefined) bytes.push(b);
    else for (const x of ENCODER.encode(ch)) bytes.push(x); // a space, or an added token's own text
  }
  return new TextDecoder("utf-8", { fatal: false }).decode(new Uint8Array(bytes));
}

// BasicTokenizer._clean_text: category C* (Cc, Cf, Cs, Co, Cn) and U+FFFD are dropped, except the three
// whitespace controls, which (with the Zs separators) become spaces.
const DIRT = /[\p{C}\p{Zs}\uFFFD]/gu;
const SPACE_LIKE = /^[\t\n\r\p{Zs}]$/u;
// BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks and extensions, compatibility ideographs.
const CJK =
  /[\u{4E00}-\u{9FFF}\u{3400}-\u{4DBF}\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\u{F900}-\u{FAFF}\u{2F800}-\u{2FA1F}]/gu;

/** The text CLIP's regex sees: transformers' fallback cleanup (no ftfy), lower-cased, single-spaced. */
export function cleanClipText(text: string): string {
  const cleaned = text
    .replace(DIRT, (c) => (SPACE_LIKE.test(c) ? " " : ""))
    .replace(CJK, (c) => ` ${c} `)
    .normalize("NFC");
  // Python's str.split() also splits on U+2028/U+2029 (categories Zl/Zp, kept by the cleanup): so does \s.
  const words = cleaned.split(/\s+/).filter((w) => w.length > 0);
  return words.map((w) => w.toLowerCase()).join(" ");
}

/** CLIP's pre-token pattern (transformers' `self.pat`, compiled with re.IGNORECASE). */
export const CLIP_PRETOKEN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/** The pre-tokens of already cleaned text. */
export function preTokenize(cleaned: string): string[] {
  return cleaned.match(CLIP_PRETOKEN) ?? [];
}

/** A merge's key in the rank table: the two symbols joined by a space (symbols never hold spaces). */
export const pairKey = (a: string, b: string): string => `${a} ${b}`;

const CACHE_LIMIT = 100_000;

/** BPE merges by rank, with a per-word cache. */
export class ClipBpe {
  readonly merges: readonly (readonly [string, string])[];
  private readonly ranks: Map<string, number>;
  private readonly cache = new Map<string, readonly string[]>();

  constructor(merges: readonly (readonly [string, string])[]) {
    this.merges = merges;
    this.ranks = new Map();
    // a repeated merge keeps its last rank, as transformers' `dict(zip(merges, range(n)))` does
    merges.forEach(([a, b], i) => {
      this.ranks.set(pairKey(a, b), i);
    });
    this.resetCache();
  }

  private resetCache(): void {
    this.cache.clear();
    this.cache.set(CLIP_BOS_TEXT, [CLIP_BOS_TEXT]);
    this.cache.set(CLIP_EOS_TEXT, [CLIP_EOS_TEXT]);
  }

  /** The BPE pieces of one byte-encoded pre-token (transformers' `bpe(token).split(" ")`). */
  apply(token: string): readonly string[] {
    const hit = this.cache.get(token);
    if (hit !== undefined) return hit;
    let word: string[] = Array.from(token);
    word[word.length - 1] += CLIP_WORD_END;
    while (word.length > 1) {
      let best = -1;
      let bestRank = Number.POSITIVE_INFINITY;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(pairKey(word[i]!, word[i + 1]!));
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best]!;
      const second = word[best + 1]!;
      const next: string[] = word.slice(0, best);
      for (let i = best; i < word.length; ) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else next.push(word[i++]!);
      }
      word = next;
    }
    if (this.cache.size >= CACHE_LIMIT) this.resetCache();
    this.cache.set(token, word);
    return word;
  }
}
