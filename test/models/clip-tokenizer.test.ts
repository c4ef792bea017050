/**
 * CLIPTokenizer against transformers' slow CLIPTokenizer (4.45, no ftfy): every case of the
 * clip-tokenizer fixture (cleanup, BPE pieces, ids with and without padding/truncation, SDXL's "!"
 * padding), the folder round trip byte for byte, pipeline folders, the errors of bad folders and bad
 * input; then BPE training on emoji captions: layout, determinism, tie rule, save → load → same ids.
 */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { CLIP_BASE_VOCAB, trainClipBpe } from "../../src/models/text/bpe-train.ts";
import { BYTE_SYMBOLS, cleanClipText, preTokenize } from "../../src/models/text/clip-bpe.ts";
import { CLIPTokenizer } from "../../src/models/text/clip-tokenizer.ts";

const FIX = "test/fixtures/clip-tokenizer";
const DIR = join(FIX, "tokenizer");
const FILES = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"];
const tmp = mkdtempSync(join(tmpdir(), "diffuse-clip-tok-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Case {
  id: number;
  prompt: string;
  note: string;
  normalized_text: string;
  tokens: string[];
  num_tokens: number;
  truncated: boolean;
  ids_untruncated: number[];
  input_ids: number[];
  attention_mask: number[];
  input_ids_pad_excl: number[];
}
const fixture = JSON.parse(readFileSync(join(FIX, "cases.json"), "utf8")) as {
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  vocab_size: number;
  cases: Case[];
};
const tok = CLIPTokenizer.fromPretrained(DIR);
const tokExcl = CLIPTokenizer.fromPretrained(DIR, { padToken: "!" });

test("clip tokenizer: the special ids, vocabulary size and context come from the folder", () => {
  assert.equal(tok.vocabSize, fixture.vocab_size);
  assert.equal(tok.bosTokenId, fixture.bos_token_id);
  assert.equal(tok.eosTokenId, fixture.eos_token_id);
  assert.equal(tok.padTokenId, fixture.pad_token_id);
  assert.equal(tok.modelMaxLength, 77);
  assert.equal(tokExcl.padTokenId, 0);
});

for (const c of fixture.cases) {
  test(`clip tokenizer: case ${c.id} (${c.note}) equals transformers`, () => {
    const label = JSON.stringify(c.prompt);
    assert.equal(cleanClipText(c.prompt), c.normalized_text, `cleanup of ${label}`);
    assert.deepEqual(tok.tokens(c.prompt), c.tokens, `pieces of ${label}`);
    assert.equal(tok.countTokens(c.prompt), c.num_tokens);
    const ids = tok.encode(c.prompt);
    assert.equal(ids.length, 77);
    assert.deepEqual(ids, c.input_ids, `input_ids of ${label}`);
    const batch = tok.tokenize([c.prompt]);
    assert.deepEqual(batch.inputIds[0], c.input_ids);
    assert.deepEqual(batch.attentionMask[0], c.attention_mask);
    assert.equal(batch.truncated[0], c.truncated);
    assert.equal(batch.numTokens[0], c.num_tokens);
    const raw = tok.tokenize([c.prompt], { padding: "none", truncation: false });
    assert.deepEqual(raw.inputIds[0], c.ids_untruncated, `untruncated ids of ${label}`);
    assert.deepEqual(tokExcl.encode(c.prompt), c.input_ids_pad_excl, `pad "!" ids of ${label}`);
  });
}

test("clip tokenizer: a batch pads each row to 77, or to its longest row", () => {
  const prompts = fixture.cases.map((c) => c.prompt);
  const batch = tok.tokenize(prompts);
  assert.deepEqual(
    batch.inputIds,
    fixture.cases.map((c) => c.input_ids),
  );
  assert.deepEqual(
    batch.attentionMask,
    fixture.cases.map((c) => c.attention_mask),
  );
  const short = tok.tokenize(["a photo of a cat", "a", ""], { padding: "longest" });
  assert.deepEqual(short.inputIds[1], [998, 320, 999, 999, 999, 999, 999, 999, 999]);
  assert.deepEqual(short.attentionMask[2], [1, 1, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(short.inputIds[0], fixture.cases[0]!.ids_untruncated);
  const ten = tok.tokenize(["a a a a a a a a a a a a"], { maxLength: 10 });
  assert.deepEqual(ten.inputIds[0], [998, 320, 320, 320, 320, 320, 320, 320, 320, 999]);
  assert.deepEqual(ten.truncated, [true]);
});

test("clip tokenizer: over-long prompts are reported with what is dropped", () => {
  assert.equal(tok.truncationNote("a photo of a cat"), null);
  const long = fixture.cases.find((c) => c.truncated && c.num_tokens === 76)!;
  assert.equal(
    tok.truncationNote(long.prompt),
    'prompt is 76 tokens, the model reads 75; the rest is dropped: "a"',
  );
});

test("clip tokenizer: decode inverts encode up to CLIP's spacing", () => {
  for (const text of [
    "a photo of a cat",
    "👍🏽",
    "café crème brûlée",
    "i'm happy, you're sad.",
    "一 只 猫 a cat",
  ]) {
    assert.equal(tok.decode(tok.encode(text)), text);
  }
  assert.equal(tok.decode(tok.encode("A PHOTO")), "a photo");
  assert.equal(
    tok.decode([998, 320, 634, 999, 999], { skipSpecialTokens: false }),
    "<|startoftext|>a cat <|endoftext|><|endoftext|>",
  );
  assert.equal(tok.decode(tok.encode("up: now")), "up : now"); // each piece ends a word
  assert.equal(tok.decode([320, 267]), "a,"); // clean_up_tokenization_spaces from the folder
  assert.equal(tok.decode([320, 267], { cleanUpTokenizationSpaces: false }), "a ,");
});

test("clip tokenizer: save_pretrained's files come back byte for byte", () => {
  const out = join(tmp, "saved");
  tok.savePretrained(out);
  for (const f of FILES)
    assert.equal(readFileSync(join(out, f), "utf8"), readFileSync(join(DIR, f), "utf8"), f);
  // SDXL's second tokenizer: pad "!" becomes an added token, and survives the round trip
  const excl = join(tmp, "saved-excl");
  tokExcl.savePretrained(excl);
  const back = CLIPTokenizer.fromPretrained(excl);
  assert.equal(back.padTokenId, 0);
  const bang = fixture.cases.find((c) => c.prompt.startsWith("hello!!!"))!;
  assert.deepEqual(back.encode(bang.prompt), bang.input_ids_pad_excl);
});

test("clip tokenizer: a pipeline folder, its tokenizer_2, and SD2's older config layout", () => {
  const pipe = join(tmp, "pipeline");
  cpSync(DIR, join(pipe, "tokenizer"), { recursive: true });
  mkdirSync(join(pipe, "tokenizer_2"));
  for (const f of ["vocab.json", "merges.txt"]) cpSync(join(DIR, f), join(pipe, "tokenizer_2", f));
  // no added_tokens_decoder: special_tokens_map.json decides, AddedToken objects carry "__type"
  const added = (content: string) => ({
    __type: "AddedToken",
    content,
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  });
  writeFileSync(
    join(pipe, "tokenizer_2", "tokenizer_config.json"),
    JSON.stringify({ bos_token: added("<|startoftext|>"), model_max_length: 77, pad_token: "<|endoftext|>" }),
  );
  writeFileSync(
    join(pipe, "tokenizer_2", "special_tokens_map.json"),
    JSON.stringify({
      bos_token: added("<|startoftext|>"),
      eos_token: added("<|endoftext|>"),
      pad_token: "!",
      unk_token: added("<|endoftext|>"),
    }),
  );
  const one = CLIPTokenizer.fromPretrained(pipe);
  assert.deepEqual(one.encode("a photo of a cat"), fixture.cases[0]!.input_ids);
  const two = CLIPTokenizer.fromPretrained(pipe, { subfolder: "tokenizer_2" });
  assert.equal(two.padTokenId, 0);
  assert.deepEqual(two.encode("a photo of a cat"), fixture.cases[0]!.input_ids_pad_excl);
});

function brokenFolder(name: string, edit: (dir: string) => void): string {
  const dir = join(tmp, name);
  cpSync(DIR, dir, { recursive: true });
  edit(dir);
  return dir;
}

test("clip tokenizer: missing and corrupt files are named, with the fix", () => {
  assert.throws(() => CLIPTokenizer.fromPretrained(join(tmp, "nowhere")), /no folder at .*nowhere/);
  assert.throws(
    () => CLIPTokenizer.fromPretrained(join(DIR, "vocab.json")),
    /is a file; pass a CLIPTokenizer folder/,
  );
  const cases: [string, (d: string) => void, RegExp][] = [
    ["no-vocab", (d) => rmSync(join(d, "vocab.json")), /has no vocab\.json/],
    ["no-merges", (d) => rmSync(join(d, "merges.txt")), /has no merges\.txt/],
    ["bad-json", (d) => writeFileSync(join(d, "vocab.json"), '{"a": 1,'), /vocab\.json is not valid JSON/],
    ["bad-id", (d) => writeFileSync(join(d, "vocab.json"), '{"a": 1.5}'), /token "a" has id 1\.5/],
    ["dup-id", (d) => writeFileSync(join(d, "vocab.json"), '{"a": 1, "b": 1}'), /"a" and "b" share id 1/],
    [
      "no-header",
      (d) => writeFileSync(join(d, "merges.txt"), "i n\na c\n"),
      /does not start with a "#version: 0\.2" line/,
    ],
    [
      "bad-merge",
      (d) => writeFileSync(join(d, "merges.txt"), "#version: 0.2\ni n\nabc\n"),
      /merges\.txt line 3 is "abc"/,
    ],
    [
      "bad-max",
      (d) => writeFileSync(join(d, "tokenizer_config.json"), '{"model_max_length": 1e30}'),
      /model_max_length 1e\+30 .* set "model_max_length": 77/,
    ],
    [
      "bad-special",
      (d) => {
        writeFileSync(join(d, "tokenizer_config.json"), '{"model_max_length": 77}');
        writeFileSync(join(d, "special_tokens_map.json"), '{"pad_token": "<pad>"}');
      },
      /special token "<pad>" is not in the vocabulary/,
    ],
  ];
  for (const [name, edit, re] of cases)
    assert.throws(() => CLIPTokenizer.fromPretrained(brokenFolder(name, edit)), re, name);
  const fast = brokenFolder("fast-only", (d) => {
    rmSync(join(d, "vocab.json"));
    writeFileSync(join(d, "tokenizer.json"), "{}");
  });
  assert.throws(() => CLIPTokenizer.fromPretrained(fast), /tokenizer\.json, a fast tokenizer/);
});

test("clip tokenizer: non-string prompts and bad options are refused by name", () => {
  const t = tok as unknown as { encode(x: unknown): number[]; tokenize(x: unknown, o?: unknown): unknown };
  assert.throws(() => t.encode(42), { name: "TypeError", message: /prompt must be a string, got a number/ });
  assert.throws(() => t.encode(null), { name: "TypeError", message: /got null/ });
  assert.throws(() => t.encode(["a"]), { name: "TypeError", message: /got an array/ });
  assert.throws(() => t.tokenize("a cat"), { name: "TypeError", message: /wrap one prompt as \[prompt\]/ });
  assert.throws(() => t.tokenize(["ok", undefined]), {
    name: "TypeError",
    message: /texts\[1\] must be a string, got undefined/,
  });
  assert.throws(() => tok.tokenize(["a"], { maxLength: 1 }), /maxLength 1 must be an integer ≥ 2/);
  assert.throws(() => tok.decode([5000]), /id 5000 is not in the vocabulary/);
});

test("clip tokenizer: encodes thousands of captions a second (BPE cached per word)", (t) => {
  const captions = Array.from(
    { length: 4000 },
    (_, i) => `${fixture.cases[i % fixture.cases.length]!.prompt} number ${i}`,
  );
  const t0 = performance.now();
  for (const c of captions) tok.encode(c);
  const rate = captions.length / ((performance.now() - t0) / 1000);
  t.diagnostic(`${Math.round(rate)} captions/s`);
  assert.ok(rate > 1000, `${rate} captions/s`);
});

// ── training ────────────────────────────────────────────────────────────────────────────────────
const BASES = [
  "thumbs up sign",
  "waving hand",
  "raised fist",
  "ok hand sign",
  "clapping hands",
  "person running",
  "woman dancing",
  "man shrugging",
  "face with tears of joy",
  "red heart",
];
const TONES = [
  "light skin tone",
  "medium-light skin tone",
  "medium skin tone",
  "medium-dark skin tone",
  "dark skin tone",
];
const STYLES = ["google style", "apple style", "twitter style", "samsung style"];
const CORPUS = BASES.flatMap((b) => TONES.flatMap((t) => STYLES.map((s) => `${b}, ${t}, ${s}`)));

test("bpe training: 200 emoji captions give CLIP's layout, whole frequent words, and round trips", () => {
  assert.equal(CORPUS.length, 200);
  const trained = trainClipBpe(CORPUS, { vocabSize: 600 });
  assert.equal(trained.vocabSize, 600);
  assert.equal(trained.merges.length, 600 - CLIP_BASE_VOCAB);
  const vocab = trained.vocab;
  BYTE_SYMBOLS.forEach((s, i) => {
    assert.equal(vocab.get(s), i);
    assert.equal(vocab.get(`${s}</w>`), 256 + i);
  });
  trained.merges.forEach(([a, b], i) => {
    assert.equal(vocab.get(a + b), 512 + i);
  });
  assert.equal(trained.bosTokenId, 598);
  assert.equal(trained.eosTokenId, 599);
  assert.equal(trained.padTokenId, 599);
  for (const w of ["skin", "tone", "style", "medium", "light", "dark", "sign", "hand", "google"]) {
    assert.deepEqual(trained.tokens(w), [`${w}</w>`], w);
  }
  // decode gives the cleaned caption, each pre-token a word (CLIP decodes "medium-light" as "medium - light")
  for (const c of CORPUS) {
    const back = trained.decode(trained.encode(c));
    if (!c.includes("-")) assert.equal(back, cleanClipText(c));
    assert.equal(back, preTokenize(cleanClipText(c)).join(" ").replaceAll(" ,", ","));
  }
  // a caption of known words: one token per word and punctuation mark
  assert.deepEqual(trained.tokens("Medium skin tone, google style"), [
    "medium</w>",
    "skin</w>",
    "tone</w>",
    ",</w>",
    "google</w>",
    "style</w>",
  ]);

  const dir = join(tmp, "trained");
  trained.savePretrained(dir);
  assert.ok(readFileSync(join(dir, "merges.txt"), "utf8").startsWith("#version: 0.2\n"));
  const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  assert.equal(config.tokenizer_class, "CLIPTokenizer");
  assert.equal(config.model_max_length, 77);
  assert.deepEqual(Object.keys(config.added_tokens_decoder), ["598", "599"]);
  const back = CLIPTokenizer.fromPretrained(dir);
  assert.deepEqual(back.merges, trained.merges);
  assert.deepEqual([...back.vocab], [...trained.vocab]);
  for (const c of CORPUS.slice(0, 50)) assert.deepEqual(back.encode(c), trained.encode(c));
  // saving the reloaded tokenizer writes the same bytes
  const again = join(tmp, "trained-again");
  back.savePretrained(again);
  for (const f of FILES)
    assert.equal(readFileSync(join(again, f), "utf8"), readFileSync(join(dir, f), "utf8"), f);
});

test("bpe training: a vocabulary larger than the corpus supports stops with every word one token", () => {
  const full = trainClipBpe(CORPUS, { vocabSize: 5000 });
  const words = new Set(CORPUS.flatMap((c) => cleanClipText(c).match(/\p{L}+/gu)!));
  for (const w of words) assert.deepEqual(full.tokens(w), [`${w}</w>`], w);
  assert.ok(full.vocabSize < 5000);
  assert.equal(full.vocabSize, CLIP_BASE_VOCAB + full.merges.length);
  assert.equal(trainClipBpe(CORPUS, { vocabSize: full.vocabSize - 1 }).vocabSize, full.vocabSize - 1);
});

test("bpe training: deterministic, order-free, ties to the first pair in code-point order", () => {
  const a = trainClipBpe(CORPUS, { vocabSize: 600 });
  const b = trainClipBpe([...CORPUS].reverse(), { vocabSize: 600 });
  assert.deepEqual(b.merges, a.merges);
  // "ab" and "cd" twice each: both pairs count 2, ("a", "b</w>") sorts first
  assert.deepEqual(trainClipBpe(["ab ab cd cd"], { vocabSize: 515 }).merges, [["a", "b</w>"]]);
  assert.deepEqual(trainClipBpe(["ab ab cd cd"], { vocabSize: 600 }).merges, [
    ["a", "b</w>"],
    ["c", "d</w>"],
  ]);
  // every pair occurs once: nothing reaches minFrequency 2, the vocabulary keeps its 514 base entries
  assert.equal(trainClipBpe(["abc xyz"], { vocabSize: 600 }).vocabSize, CLIP_BASE_VOCAB);
  assert.equal(trainClipBpe(["abc xyz"], { vocabSize: 600, minFrequency: 1 }).vocabSize, CLIP_BASE_VOCAB + 4);
  // special-token text in a caption is not learnt
  const withEos = trainClipBpe(["<|endoftext|> <|endoftext|>"], { vocabSize: 600, minFrequency: 1 });
  assert.equal(withEos.merges.length, 0);
});

test("bpe training: bad corpora and sizes are refused by name", () => {
  assert.throws(() => trainClipBpe(["ok", 7 as unknown as string], { vocabSize: 600 }), {
    name: "TypeError",
    message: /corpus\[1\] must be a string, got number/,
  });
  assert.throws(() => trainClipBpe("captions" as unknown as string[], { vocabSize: 600 }), {
    name: "TypeError",
  });
  assert.throws(() => trainClipBpe(CORPUS, { vocabSize: 100 }), /vocabSize 100 must be an integer from 514/);
  assert.throws(() => trainClipBpe(CORPUS, { vocabSize: 60000 }), /to 49408/);
  assert.throws(() => trainClipBpe(CORPUS, { vocabSize: 600, minFrequency: 0 }), /minFrequency 0/);
});
