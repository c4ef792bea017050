/**
 * CLIP's tokenizer (Radford et al. 2021), as transformers' slow `CLIPTokenizer` (4.45) runs it without
 * ftfy, and as StableDiffusionPipeline calls it: `tokenizer(prompt, padding="max_length",
 * max_length=77, truncation=True)`.
 *
 *   prompt ─ split off added tokens (the special tokens' exact text: "<|endoftext|>", SD2's pad "!")
 *          ─ per remaining chunk: cleanup + lower-case ─ CLIP's pre-token regex ─ UTF-8 bytes as
 *            symbols ─ BPE by merge rank (cached per word) ─ ids (unknown pieces → unk)
 *          ─ [bos] + ids[:maxLength − 2] + [eos] ─ padded with the pad id to maxLength
 *
 * The pieces are in clip-bpe.ts, the files in clip-tokenizer-files.ts, training in bpe-train.ts.
 */
import { byteDecode, byteEncode, ClipBpe, cleanClipText, preTokenize } from "./clip-bpe.ts";
import {
  type AddedTokenSpec,
  type CLIPTokenizerLoadOptions,
  type CLIPTokenizerSpec,
  readClipTokenizerFiles,
  writeClipTokenizerFiles,
} from "./clip-tokenizer-files.ts";

/** How a batch is padded: to `maxLength`, to its longest row, or not at all (rows of their own length). */
export type ClipPadding = "max_length" | "longest" | "none";

export interface ClipTokenizeOptions {
  /** Row length for padding and the truncation limit (start and end tokens included); default modelMaxLength. */
  maxLength?: number;
  /** Default "max_length", as the Stable Diffusion pipelines call it. */
  padding?: ClipPadding;
  /** Keep `maxLength − 2` text tokens (then the end token); default true. */
  truncation?: boolean;
}

export interface ClipBatch {
  inputIds: number[][];
  /** 1 for the start token, text tokens and end token; 0 for padding. */
  attentionMask: number[][];
  /** Text tokens per prompt before truncation (start and end tokens not counted). */
  numTokens: number[];
  /** Whether truncation dropped tokens of that prompt. */
  truncated: boolean[];
}

export interface ClipDecodeOptions {
  /** Leave out the start, end, unk and pad tokens; default true (transformers' default is false). */
  skipSpecialTokens?: boolean;
  /** Join " ." → ".", " ," → ",", " 's" → "'s" …; default: the folder's clean_up_tokenization_spaces. */
  cleanUpTokenizationSpaces?: boolean;
}

const ID_CACHE_LIMIT = 100_000;
const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

function typeName(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? `an object (${Object.prototype.toString.call(v)})` : `a ${typeof v}`;
}

function checkPrompt(text: unknown, where: string): asserts text is string {
  if (typeof text !== "string") {
    throw new TypeError(
      `CLIPTokenizer: ${where} must be a string, got ${typeName(text)}: pass the prompt text`,
    );
  }
}

/** transformers' `clean_up_tokenization`. */
function cleanUpSpaces(s: string): string {
  return s
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

export class CLIPTokenizer {
  private readonly spec: CLIPTokenizerSpec;
  private readonly bpe: ClipBpe;
  private readonly added = new Map<string, AddedTokenSpec>();
  private readonly idToToken = new Map<number, string>();
  private readonly specialIds = new Set<number>();
  private readonly addedSplit: RegExp | null;
  private readonly idCache = new Map<string, readonly number[]>();
  private readonly ids: { bos: number; eos: number; unk: number; pad: number };

  constructor(spec: CLIPTokenizerSpec) {
    if (!Number.isInteger(spec.modelMaxLength) || spec.modelMaxLength < 2) {
      throw new RangeError(
        `CLIPTokenizer: modelMaxLength ${spec.modelMaxLength} must be an integer ≥ 2; CLIP's is 77`,
      );
    }
    this.spec = spec;
    this.bpe = new ClipBpe(spec.merges);
    for (const [token, id] of spec.vocab) this.idToToken.set(id, token);
    for (const t of spec.addedTokens ?? []) this.added.set(t.content, t);
    // transformers' __init__ adds every special token missing from added_tokens_decoder: bos/eos/unk
    // as AddedToken objects (normalized), pad as a plain string (not normalized).
    const specials: [string, boolean][] = [
      [spec.bosToken, true],
      [spec.eosToken, true],
      [spec.unkToken, true],
      [spec.padToken, false],
    ];
    for (const [content, normalized] of specials) {
      if (content === "")
        throw new Error(
          `CLIPTokenizer: a special token is the empty string; CLIP's are "<|startoftext|>" and "<|endoftext|>"`,
        );
      if (this.added.has(content)) continue;
      const id = spec.vocab.get(content);
      if (id === undefined) {
        throw new Error(
          `CLIPTokenizer: special token ${JSON.stringify(content)} is not in the vocabulary; ` +
            `use a token of vocab.json (CLIP: "<|startoftext|>", "<|endoftext|>", SD2's pad "!")`,
        );
      }
      this.added.set(content, {
        id,
        content,
        special: true,
        normalized,
        lstrip: false,
        rstrip: false,
        singleWord: false,
      });
    }
    for (const t of this.added.values()) {
      this.idToToken.set(t.id, t.content);
      if (t.special) this.specialIds.add(t.id);
    }
    const texts = [...this.added.keys()].filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
    // leftmost, then longest: what transformers' Trie.split finds
    this.addedSplit = texts.length > 0 ? new RegExp(texts.map(escapeRegExp).join("|"), "g") : null;
    const idOf = (t: string): number => this.added.get(t)!.id;
    this.ids = {
      bos: idOf(spec.bosToken),
      eos: idOf(spec.eosToken),
      unk: idOf(spec.unkToken),
      pad: idOf(spec.padToken),
    };
  }

  /**
   * Loads a CLIPTokenizer folder (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json)
   * or a pipeline folder holding tokenizer/ (`subfolder: "tokenizer_2"` for SDXL's second). Options
   * override the folder as transformers' keyword arguments do (`padToken: "!"`).
   */
  static fromPretrained(dir: string, opts: CLIPTokenizerLoadOptions = {}): CLIPTokenizer {
    return new CLIPTokenizer(readClipTokenizerFiles(dir, opts));
  }

  /** Writes the folder transformers' `CLIPTokenizer.from_pretrained` reads (each file atomically). */
  savePretrained(dir: string): void {
    const addedTokens = [...this.added.values()].sort((a, b) => a.id - b.id);
    writeClipTokenizerFiles(dir, { ...this.spec, addedTokens });
  }

  /** Entries of vocab.json (transformers' `vocab_size`): CLIP's 49,408. */
  get vocabSize(): number {
    return this.spec.vocab.size;
  }
  get modelMaxLength(): number {
    return this.spec.modelMaxLength;
  }
  get bosTokenId(): number {
    return this.ids.bos;
  }
  get eosTokenId(): number {
    return this.ids.eos;
  }
  get padTokenId(): number {
    return this.ids.pad;
  }
  get unkTokenId(): number {
    return this.ids.unk;
  }
  get padToken(): string {
    return this.spec.padToken;
  }
  /** The merges in rank order (best first). */
  get merges(): readonly (readonly [string, string])[] {
    return this.spec.merges;
  }
  /** symbol → id, as vocab.json. */
  get vocab(): ReadonlyMap<string, number> {
    return this.spec.vocab;
  }

  /** The prompt split into added tokens (as ids) and plain chunks. */
  private *chunks(text: string): Generator<string | number> {
    if (this.addedSplit === null) {
      yield text;
      return;
    }
    let at = 0;
    for (const m of text.matchAll(this.addedSplit)) {
      if (m.index > at) yield text.slice(at, m.index);
      yield this.added.get(m[0])!.id;
      at = m.index + m[0].length;
    }
    if (at < text.length) yield text.slice(at);
  }

  private pieceId(piece: string): number {
    return this.added.get(piece)?.id ?? this.spec.vocab.get(piece) ?? this.ids.unk;
  }

  /** The text's token ids, no start/end tokens, no truncation (transformers' `encode(add_special_tokens=False)`). */
  textIds(text: string): number[] {
    checkPrompt(text, "the prompt");
    const out: number[] = [];
    for (const chunk of this.chunks(text)) {
      if (typeof chunk === "number") {
        out.push(chunk);
        continue;
      }
      for (const word of preTokenize(cleanClipText(chunk))) {
        let ids = this.idCache.get(word);
        if (ids === undefined) {
          ids = this.bpe.apply(byteEncode(word)).map((p) => this.pieceId(p));
          if (this.idCache.size >= ID_CACHE_LIMIT) this.idCache.clear();
          this.idCache.set(word, ids);
        }
        for (const id of ids) out.push(id);
      }
    }
    return out;
  }

  /** The BPE pieces of a prompt (transformers' `tokenize`): byte symbols, `</w>` ending each word. */
  tokens(text: string): string[] {
    checkPrompt(text, "the prompt");
    const out: string[] = [];
    for (const chunk of this.chunks(text)) {
      if (typeof chunk === "number") out.push(this.idToToken.get(chunk)!);
      else
        for (const word of preTokenize(cleanClipText(chunk))) out.push(...this.bpe.apply(byteEncode(word)));
    }
    return out;
  }

  /** Text tokens in a prompt (start and end tokens not counted): the model reads modelMaxLength − 2. */
  countTokens(text: string): number {
    return this.textIds(text).length;
  }

  /**
   * A warning for the CLI when truncation drops part of the prompt, else null:
   * `prompt is 90 tokens, the model reads 75; the rest is dropped: "…"`.
   */
  truncationNote(text: string, maxLength = this.modelMaxLength): string | null {
    const ids = this.textIds(text);
    const keep = maxLength - 2;
    if (ids.length <= keep) return null;
    const rest = this.decode(ids.slice(keep));
    return `prompt is ${ids.length} tokens, the model reads ${keep}; the rest is dropped: ${JSON.stringify(rest)}`;
  }

  /** One prompt as exactly `modelMaxLength` ids (77): start, ≤ 75 text tokens, end, padding. */
  encode(text: string): number[] {
    checkPrompt(text, "the prompt");
    return this.tokenize([text]).inputIds[0]!;
  }

  /** A batch of prompts: ids and attention masks, padded and truncated as the Stable Diffusion pipelines call it. */
  tokenize(texts: readonly string[], opts: ClipTokenizeOptions = {}): ClipBatch {
    if (!Array.isArray(texts)) {
      throw new TypeError(
        `CLIPTokenizer.tokenize: texts must be an array of strings, got ${typeName(texts)}: wrap one prompt as [prompt]`,
      );
    }
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    const padding = opts.padding ?? "max_length";
    const truncation = opts.truncation ?? true;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(
        `CLIPTokenizer.tokenize: maxLength ${maxLength} must be an integer ≥ 2 (start + end tokens); CLIP's is 77`,
      );
    }
    if (padding !== "max_length" && padding !== "longest" && padding !== "none") {
      throw new RangeError(
        `CLIPTokenizer.tokenize: padding ${JSON.stringify(padding)} is not one of "max_length", "longest", "none"`,
      );
    }
    const rows: number[][] = [];
    const numTokens: number[] = [];
    const truncated: boolean[] = [];
    texts.forEach((text, i) => {
      checkPrompt(text, `texts[${i}]`);
      const ids = this.textIds(text);
      const cut = truncation && ids.length > maxLength - 2;
      numTokens.push(ids.length);
      truncated.push(cut);
      rows.push([this.ids.bos, ...(cut ? ids.slice(0, maxLength - 2) : ids), this.ids.eos]);
    });
    const target =
      padding === "max_length"
        ? maxLength
        : padding === "longest"
          ? Math.max(0, ...rows.map((r) => r.length))
          : 0;
    const attentionMask = rows.map((r) => {
      const mask = new Array<number>(Math.max(r.length, target)).fill(0).fill(1, 0, r.length);
      while (r.length < target) r.push(this.ids.pad);
      return mask;
    });
    return { inputIds: rows, attentionMask, numTokens, truncated };
  }

  /**
   * Ids back to text (transformers' `decode`): byte symbols to UTF-8 (bad bytes → U+FFFD), each `</w>`
   * a space, trimmed; special tokens left out unless `skipSpecialTokens: false`.
   */
  decode(ids: readonly number[], opts: ClipDecodeOptions = {}): string {
    if (!Array.isArray(ids))
      throw new TypeError(`CLIPTokenizer.decode: ids must be an array of numbers, got ${typeName(ids)}`);
    const skip = opts.skipSpecialTokens ?? true;
    const parts: string[] = [];
    let run = "";
    const flush = () => {
      const s = byteDecode(run).trim();
      if (s.length > 0) parts.push(s);
      run = "";
    };
    for (const id of ids) {
      const token = Number.isInteger(id) ? this.idToToken.get(id) : undefined;
      if (token === undefined) {
        throw new RangeError(
          `CLIPTokenizer.decode: id ${id} is not in the vocabulary (ids 0…${this.vocabSize - 1}); pass ids from encode/tokenize`,
        );
      }
      if (skip && this.specialIds.has(id)) continue;
      const added = this.added.get(token);
      if (added !== undefined && !added.special) {
        // transformers decodes a non-special added token apart and joins the parts with spaces
        flush();
        parts.push(token);
      } else run += token;
    }
    flush();
    const text = parts.join(" ");
    return (opts.cleanUpTokenizationSpaces ?? this.spec.cleanUpTokenizationSpaces ?? false)
      ? cleanUpSpaces(text)
      : text;
  }
}
