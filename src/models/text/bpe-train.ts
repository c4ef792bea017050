/**
 * Training CLIP's byte-level BPE on a caption corpus (Sennrich et al. 2016, "Neural Machine
 * Translation of Rare Words with Subword Units", over GPT-2's byte alphabet with CLIP's `</w>` word ends).
 *
 * Words come from the tokenizer's own cleanup and pre-token regex (clip-bpe.ts), counted over the
 * corpus; each word starts as its byte symbols, the last one with `</w>`. Then, until the vocabulary
 * is full: count every adjacent symbol pair (weighted by word frequency), merge the most frequent pair
 * everywhere, left to right, as `ClipBpe.apply` will at encode time. Ties go to the pair that sorts
 * first by code point (`first`, then `second`), so training is deterministic. Training stops early when
 * the best pair occurs fewer than `minFrequency` times. A pair whose concatenation is already a symbol
 * (another pair made it) is skipped, so every merge adds exactly one vocabulary entry.
 *
 * The vocabulary has CLIP's layout: the 256 byte symbols, the same with `</w>`, one entry per merge,
 * then `<|startoftext|>` and `<|endoftext|>`: vocabSize = 514 + merges.
 */
import {
  BYTE_SYMBOLS,
  byteEncode,
  CLIP_BOS_TEXT,
  CLIP_EOS_TEXT,
  CLIP_MAX_MERGES,
  CLIP_WORD_END,
  cleanClipText,
  pairKey,
  preTokenize,
} from "./clip-bpe.ts";
import { CLIPTokenizer } from "./clip-tokenizer.ts";

/** Entries every CLIP vocabulary has before its merges: 512 byte symbols + 2 special tokens. */
export const CLIP_BASE_VOCAB = 2 * 256 + 2;

export interface ClipBpeTrainOptions {
  /** Total vocabulary entries (CLIP's: 49,408); at most 514 + 48,894, what transformers reads. */
  vocabSize: number;
  /** A pair must occur at least this often to be merged; default 2. */
  minFrequency?: number;
  /** The context length written to tokenizer_config.json; default 77. */
  modelMaxLength?: number;
}

/** CLIP's vocabulary for a list of merges (see the file comment for the layout). */
export function clipVocabFromMerges(merges: readonly (readonly [string, string])[]): Map<string, number> {
  const vocab = new Map<string, number>();
  for (const s of BYTE_SYMBOLS) vocab.set(s, vocab.size);
  for (const s of BYTE_SYMBOLS) vocab.set(s + CLIP_WORD_END, vocab.size);
  for (const [a, b] of merges) {
    if (vocab.has(a + b))
      throw new Error(
        `clipVocabFromMerges: merge "${a} ${b}" makes ${JSON.stringify(a + b)} again; each merge must add a new symbol`,
      );
    vocab.set(a + b, vocab.size);
  }
  vocab.set(CLIP_BOS_TEXT, vocab.size);
  vocab.set(CLIP_EOS_TEXT, vocab.size);
  return vocab;
}

/** Byte-encoded words of the corpus with their counts (special-token text is left out). */
function countWords(corpus: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  corpus.forEach((text, i) => {
    if (typeof text !== "string") {
      throw new TypeError(
        `trainClipBpe: corpus[${i}] must be a string, got ${text === null ? "null" : typeof text}`,
      );
    }
    for (const chunk of text.split(/<\|startoftext\|>|<\|endoftext\|>/)) {
      for (const word of preTokenize(cleanClipText(chunk))) {
        if (word === CLIP_BOS_TEXT || word === CLIP_EOS_TEXT) continue;
        const w = byteEncode(word);
        counts.set(w, (counts.get(w) ?? 0) + 1);
      }
    }
  });
  return counts;
}

/** A binary max-heap of (count, pair) with the tie rule; stale entries are skipped on pop. */
class PairHeap {
  private readonly items: [number, string][] = [];
  private static before(x: [number, string], y: [number, string]): boolean {
    return x[0] > y[0] || (x[0] === y[0] && x[1] < y[1]); // keys are BMP-only: UTF-16 order = code point order
  }
  push(item: [number, string]): void {
    const a = this.items;
    a.push(item);
    for (let i = a.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!PairHeap.before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): [number, string] | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && PairHeap.before(a[l]!, a[m]!)) m = l;
        if (r < a.length && PairHeap.before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** Learns up to `numMerges` merges (best first) from word counts. */
export function learnClipMerges(
  corpus: readonly string[],
  numMerges: number,
  minFrequency = 2,
): [string, string][] {
  const counts = countWords(corpus);
  const words: string[][] = [];
  const freq: number[] = [];
  for (const [w, n] of counts) {
    const syms = Array.from(w);
    syms[syms.length - 1] += CLIP_WORD_END;
    words.push(syms);
    freq.push(n);
  }
  const pairCount = new Map<string, number>();
  const pairWords = new Map<string, Set<number>>();
  const touched = new Set<string>();
  const addPairs = (w: number, sign: 1 | -1): void => {
    const syms = words[w]!;
    for (let i = 0; i + 1 < syms.length; i++) {
      const key = pairKey(syms[i]!, syms[i + 1]!);
      const n = (pairCount.get(key) ?? 0) + sign * freq[w]!;
      if (n > 0) pairCount.set(key, n);
      else pairCount.delete(key);
      touched.add(key);
      if (sign > 0) {
        const set = pairWords.get(key);
        if (set === undefined) pairWords.set(key, new Set([w]));
        else set.add(w);
      }
    }
  };
  words.forEach((_, w) => {
    addPairs(w, 1);
  });
  const heap = new PairHeap();
  const flushTouched = (): void => {
    for (const key of touched) {
      const n = pairCount.get(key);
      if (n !== undefined) heap.push([n, key]);
    }
    touched.clear();
  };
  flushTouched();

  const symbols = new Set(clipVocabFromMerges([]).keys());
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    let best: [number, string] | undefined;
    for (let e = heap.pop(); e !== undefined; e = heap.pop()) {
      if (pairCount.get(e[1]) === e[0]) {
        best = e;
        break;
      }
    }
    if (best === undefined || best[0] < minFrequency) break;
    const key = best[1];
    const cut = key.indexOf(" ");
    const first = key.slice(0, cut);
    const second = key.slice(cut + 1);
    const merged = first + second;
    pairCount.delete(key); // merged everywhere, or (if `merged` exists already) never merged
    if (symbols.has(merged)) continue;
    symbols.add(merged);
    merges.push([first, second]);
    for (const w of pairWords.get(key) ?? []) {
      const syms = words[w]!;
      addPairs(w, -1);
      const next: string[] = [];
      for (let i = 0; i < syms.length; ) {
        if (i + 1 < syms.length && syms[i] === first && syms[i + 1] === second) {
          next.push(merged);
          i += 2;
        } else next.push(syms[i++]!);
      }
      words[w] = next;
      addPairs(w, 1);
    }
    pairWords.delete(key);
    pairCount.delete(key);
    flushTouched();
  }
  return merges;
}

/**
 * Trains CLIP's BPE on captions and returns the tokenizer (bos `<|startoftext|>`; eos, unk and pad
 * `<|endoftext|>`, as CLIP). `tok.savePretrained(dir)` writes the files transformers reads.
 */
export function trainClipBpe(corpus: readonly string[], opts: ClipBpeTrainOptions): CLIPTokenizer {
  if (!Array.isArray(corpus)) {
    throw new TypeError(
      `trainClipBpe: corpus must be an array of caption strings, got ${corpus === null ? "null" : typeof corpus}`,
    );
  }
  const { vocabSize, minFrequency = 2, modelMaxLength = 77 } = opts;
  const maxVocab = CLIP_BASE_VOCAB + CLIP_MAX_MERGES;
  if (!Number.isInteger(vocabSize) || vocabSize < CLIP_BASE_VOCAB || vocabSize > maxVocab) {
    throw new RangeError(
      `trainClipBpe: vocabSize ${vocabSize} must be an integer from ${CLIP_BASE_VOCAB} (256 byte symbols, 256 with ` +
        `</w>, 2 special tokens) to ${maxVocab} (transformers reads at most ${CLIP_MAX_MERGES} merges)`,
    );
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new RangeError(`trainClipBpe: minFrequency ${minFrequency} must be an integer ≥ 1`);
  }
  const merges = learnClipMerges(corpus, vocabSize - CLIP_BASE_VOCAB, minFrequency);
  return new CLIPTokenizer({
    vocab: clipVocabFromMerges(merges),
    merges,
    bosToken: CLIP_BOS_TEXT,
    eosToken: CLIP_EOS_TEXT,
    unkToken: CLIP_EOS_TEXT,
    padToken: CLIP_EOS_TEXT,
    modelMaxLength,
    cleanUpTokenizationSpaces: true,
  });
}
