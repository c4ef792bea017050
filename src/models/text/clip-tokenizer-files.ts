/**
 * A CLIPTokenizer folder on disk, as transformers' `save_pretrained` writes it and its
 * `CLIPTokenizer.from_pretrained` reads it:
 *
 * - `vocab.json`: symbol → id, keys sorted by code point. CLIP's layout: ids 0–255 the byte symbols,
 *   256–511 the same with `</w>`, then one id per merge in merge order, then `<|startoftext|>`, `<|endoftext|>`.
 * - `merges.txt`: a `#version: 0.2` line (transformers skips line one unread), then one merge per line,
 *   "first second", best first; at most 48,894 merges are read.
 * - `tokenizer_config.json`: `model_max_length` (77), the special tokens, `added_tokens_decoder` (id →
 *   token and its flags), `clean_up_tokenization_spaces`.
 * - `special_tokens_map.json`: bos/eos/unk as token objects, pad as a string (CLIP's constructor form).
 *
 * Which special token wins follows transformers: keyword overrides, then `tokenizer_config.json`; the
 * older layout without `added_tokens_decoder` lets `special_tokens_map.json` override the config.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../../io/atomic.ts";
import { CLIP_BOS_TEXT, CLIP_EOS_TEXT, CLIP_MAX_MERGES } from "./clip-bpe.ts";

export const VOCAB_FILE = "vocab.json";
export const MERGES_FILE = "merges.txt";
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";
export const SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json";
const MERGES_HEADER = "#version: 0.2";

/** One entry of `added_tokens_decoder`: a token the tokenizer splits off before BPE. */
export interface AddedTokenSpec {
  id: number;
  content: string;
  special: boolean;
  normalized: boolean;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
}

/** Everything a CLIPTokenizer is built from. */
export interface CLIPTokenizerSpec {
  vocab: ReadonlyMap<string, number>;
  merges: readonly (readonly [string, string])[];
  bosToken: string;
  eosToken: string;
  unkToken: string;
  padToken: string;
  /** The text encoder's context: 77 for CLIP. */
  modelMaxLength: number;
  /** `added_tokens_decoder`; special tokens missing from it are added as transformers does. */
  addedTokens?: readonly AddedTokenSpec[];
  /** `clean_up_tokenization_spaces` (decode joins " ." → "." etc.); transformers 4.45 defaults it to false. */
  cleanUpTokenizationSpaces?: boolean;
}

/** Keyword overrides, as `from_pretrained(dir, pad_token="!")`. */
export interface CLIPTokenizerLoadOptions {
  /** A pipeline's tokenizer subfolder, e.g. "tokenizer_2" (SDXL); default: `dir` itself, else `dir/tokenizer`. */
  subfolder?: string;
  bosToken?: string;
  eosToken?: string;
  unkToken?: string;
  padToken?: string;
  modelMaxLength?: number;
}

const CLS = "CLIPTokenizer";
const FOLDER_HINT = `pass a CLIPTokenizer folder (${VOCAB_FILE}, ${MERGES_FILE}) or a pipeline folder holding tokenizer/`;

/** The folder holding vocab.json: `dir`, `dir/<subfolder>`, or a pipeline's `dir/tokenizer`. */
export function resolveTokenizerDir(dir: string, subfolder?: string): string {
  if (!existsSync(dir)) throw new Error(`${CLS}: no folder at ${dir}; ${FOLDER_HINT}`);
  if (!statSync(dir).isDirectory()) throw new Error(`${CLS}: ${dir} is a file; ${FOLDER_HINT}`);
  if (subfolder !== undefined) {
    const sub = join(dir, subfolder);
    if (!existsSync(sub)) throw new Error(`${CLS}: ${dir} has no ${subfolder}/ subfolder; ${FOLDER_HINT}`);
    return sub;
  }
  const own = [VOCAB_FILE, MERGES_FILE, TOKENIZER_CONFIG_FILE].some((f) => existsSync(join(dir, f)));
  if (!own && existsSync(join(dir, "tokenizer"))) return join(dir, "tokenizer");
  return dir;
}

function readText(dir: string, file: string): string {
  const path = join(dir, file);
  if (!existsSync(path)) {
    const fast = existsSync(join(dir, "tokenizer.json"))
      ? ` (it has tokenizer.json, a fast tokenizer: save the slow files with transformers' CLIPTokenizer.save_pretrained)`
      : "";
    throw new Error(`${CLS}: ${dir} has no ${file}${fast}; ${FOLDER_HINT}`);
  }
  return readFileSync(path, "utf8");
}

type Json = Record<string, unknown>;

function parseObject(dir: string, file: string, text: string): Json {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(
      `${CLS}: ${join(dir, file)} is not valid JSON (${(e as Error).message}); re-save or re-download it`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(
      `${CLS}: ${join(dir, file)} must hold a JSON object, got ${Array.isArray(json) ? "an array" : typeof json}`,
    );
  }
  return json as Json;
}

function readOptionalObject(dir: string, file: string): Json | null {
  return existsSync(join(dir, file)) ? parseObject(dir, file, readFileSync(join(dir, file), "utf8")) : null;
}

function parseVocab(dir: string, text: string): Map<string, number> {
  const json = parseObject(dir, VOCAB_FILE, text);
  const vocab = new Map<string, number>();
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(json)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      throw new Error(
        `${CLS}: ${join(dir, VOCAB_FILE)}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}; ids must be integers ≥ 0`,
      );
    }
    const other = byId.get(id);
    if (other !== undefined) {
      throw new Error(
        `${CLS}: ${join(dir, VOCAB_FILE)}: tokens ${JSON.stringify(other)} and ${JSON.stringify(token)} share id ${id}; the file is corrupt`,
      );
    }
    byId.set(id, token);
    vocab.set(token, id);
  }
  if (vocab.size === 0)
    throw new Error(`${CLS}: ${join(dir, VOCAB_FILE)} is empty; re-save or re-download it`);
  return new Map([...vocab].sort((a, b) => a[1] - b[1])); // in id order (JSON.parse puts "0"…"9" first)
}

function parseMerges(dir: string, text: string): [string, string][] {
  const lines = text.trim().split("\n");
  if (!lines[0]!.includes("#version")) {
    throw new Error(
      `${CLS}: ${join(dir, MERGES_FILE)} does not start with a "${MERGES_HEADER}" line; transformers skips line one ` +
        `unread, so its first merge would be lost: add the header line`,
    );
  }
  return lines.slice(1, 1 + CLIP_MAX_MERGES).map((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) {
      throw new Error(
        `${CLS}: ${join(dir, MERGES_FILE)} line ${i + 2} is ${JSON.stringify(line)}; each merge is two symbols separated by a space`,
      );
    }
    return [parts[0]!, parts[1]!];
  });
}

/** A special token's text: a string or an AddedToken object ({content, …}, maybe with "__type"). */
function tokenText(value: unknown, where: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "object" && typeof (value as Json)["content"] === "string")
    return (value as Json)["content"] as string;
  throw new Error(`${CLS}: ${where} is ${JSON.stringify(value)}; expected a string or {"content": "…"}`);
}

function parseAddedTokens(dir: string, config: Json): AddedTokenSpec[] | undefined {
  const raw = config["added_tokens_decoder"];
  if (raw === undefined) return undefined;
  const where = `${join(dir, TOKENIZER_CONFIG_FILE)}: added_tokens_decoder`;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new Error(`${CLS}: ${where} must be an object of id → token`);
  return Object.entries(raw as Json).map(([key, value]) => {
    const id = Number(key);
    const content = tokenText(value, `${where}["${key}"]`);
    if (!Number.isInteger(id) || id < 0 || content === undefined) {
      throw new Error(
        `${CLS}: ${where} has entry ${JSON.stringify(key)}: ${JSON.stringify(value)}; expected "id": {"content": …}`,
      );
    }
    const flag = (name: string, dflt: boolean): boolean => {
      const v = typeof value === "object" && value !== null ? (value as Json)[name] : undefined;
      return typeof v === "boolean" ? v : dflt;
    };
    return {
      id,
      content,
      special: flag("special", false),
      normalized: flag("normalized", true),
      lstrip: flag("lstrip", false),
      rstrip: flag("rstrip", false),
      singleWord: flag("single_word", false),
    };
  });
}

/** Reads a CLIPTokenizer folder (or a pipeline folder's tokenizer/) into a spec. */
export function readClipTokenizerFiles(
  dirIn: string,
  opts: CLIPTokenizerLoadOptions = {},
): CLIPTokenizerSpec {
  const dir = resolveTokenizerDir(dirIn, opts.subfolder);
  const vocab = parseVocab(dir, readText(dir, VOCAB_FILE));
  const merges = parseMerges(dir, readText(dir, MERGES_FILE));
  const config = readOptionalObject(dir, TOKENIZER_CONFIG_FILE) ?? {};
  const addedTokens = parseAddedTokens(dir, config);
  const special: Json = { ...config };
  if (addedTokens === undefined)
    Object.assign(special, readOptionalObject(dir, SPECIAL_TOKENS_MAP_FILE) ?? {});
  const pick = (override: string | undefined, key: string, dflt: string): string =>
    override ?? tokenText(special[key], `${join(dir, TOKENIZER_CONFIG_FILE)}: ${key}`) ?? dflt;
  const maxLen = opts.modelMaxLength ?? config["model_max_length"] ?? 77;
  if (typeof maxLen !== "number" || !Number.isInteger(maxLen) || maxLen < 2 || maxLen > 1_000_000) {
    throw new Error(
      `${CLS}: model_max_length ${JSON.stringify(maxLen)} in ${join(dir, TOKENIZER_CONFIG_FILE)} is not a usable context ` +
        `length (an integer from 2 to 1e6); CLIP's text encoder reads 77: set "model_max_length": 77`,
    );
  }
  const cleanUp = config["clean_up_tokenization_spaces"];
  return {
    vocab,
    merges,
    bosToken: pick(opts.bosToken, "bos_token", CLIP_BOS_TEXT),
    eosToken: pick(opts.eosToken, "eos_token", CLIP_EOS_TEXT),
    unkToken: pick(opts.unkToken, "unk_token", CLIP_EOS_TEXT),
    padToken: pick(opts.padToken, "pad_token", CLIP_EOS_TEXT),
    modelMaxLength: maxLen,
    ...(addedTokens ? { addedTokens } : {}),
    cleanUpTokenizationSpaces: typeof cleanUp === "boolean" ? cleanUp : false,
  };
}

/** Compares strings by code point, as Python's `sort_keys` does (UTF-16 order differs above U+D7FF). */
export function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done && y.done ? 0 : x.done ? -1 : 1;
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}

/** `json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"`, byte for byte. */
export function pythonJson(value: unknown, indent = ""): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => inner + pythonJson(v, inner)).join(",\n")}\n${indent}]`;
  }
  const keys = Object.keys(value).sort(compareCodePoints);
  if (keys.length === 0) return "{}";
  const items = keys.map((k) => `${inner}${JSON.stringify(k)}: ${pythonJson((value as Json)[k], inner)}`);
  return `{\n${items.join(",\n")}\n${indent}}`;
}

const tokenObject = (t: AddedTokenSpec) => ({
  content: t.content,
  lstrip: t.lstrip,
  normalized: t.normalized,
  rstrip: t.rstrip,
  single_word: t.singleWord,
});

/**
 * Writes the four files (each atomically). `addedTokens` must hold every special token. A stale
 * `tokenizer.json` (a fast tokenizer, which AutoTokenizer would prefer) is removed: it describes
 * another vocabulary.
 */
export function writeClipTokenizerFiles(
  dir: string,
  spec: CLIPTokenizerSpec & { addedTokens: readonly AddedTokenSpec[] },
): void {
  mkdirSync(dir, { recursive: true });
  const byContent = new Map(spec.addedTokens.map((t) => [t.content, t]));
  const specialObject = (content: string) => {
    const t = byContent.get(content);
    if (t === undefined)
      throw new Error(`${CLS}: special token ${JSON.stringify(content)} is not an added token`);
    return tokenObject(t);
  };
  const vocab: Json = {};
  for (const [token, id] of spec.vocab) vocab[token] = id;
  const merges = [MERGES_HEADER, ...spec.merges.map(([a, b]) => `${a} ${b}`)].join("\n");
  const decoder: Json = {};
  for (const t of spec.addedTokens) decoder[String(t.id)] = { ...tokenObject(t), special: t.special };
  const config = {
    added_tokens_decoder: decoder,
    bos_token: spec.bosToken,
    clean_up_tokenization_spaces: spec.cleanUpTokenizationSpaces ?? false,
    eos_token: spec.eosToken,
    errors: "replace",
    model_max_length: spec.modelMaxLength,
    pad_token: spec.padToken,
    tokenizer_class: CLS,
    unk_token: spec.unkToken,
  };
  const specialMap = {
    bos_token: specialObject(spec.bosToken),
    eos_token: specialObject(spec.eosToken),
    pad_token: spec.padToken,
    unk_token: specialObject(spec.unkToken),
  };
  writeFileAtomic(join(dir, VOCAB_FILE), `${pythonJson(vocab)}\n`);
  writeFileAtomic(join(dir, MERGES_FILE), `${merges}\n`);
  writeFileAtomic(join(dir, SPECIAL_TOKENS_MAP_FILE), `${pythonJson(specialMap)}\n`);
  writeFileAtomic(join(dir, TOKENIZER_CONFIG_FILE), `${pythonJson(config)}\n`);
  rmSync(join(dir, "tokenizer.json"), { force: true });
}
