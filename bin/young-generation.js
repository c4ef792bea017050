// V8's young generation for diffuse's processes, capped at 2 MiB semi-spaces.
//
// V8 grows the two semi-spaces of its young generation (up to 16 MiB each on 64-bit) while most young
// objects survive their first collections, as they do while a train step's graph is traced, and
// shrinks them again only in a collection that aims to save memory: one that a burst of external
// memory sets off (a full fine-tune's optimizer state, allocated after tracing), or the memory
// reducer after seconds of an idle event loop, which a training loop never has. A LoRA fine-tune
// allocates little after tracing, so its process kept 32 MiB of young generation, nearly all of it
// empty, through training (a tenth of its peak RSS). diffuse's weights, activations and images all
// live outside V8's heap and its JavaScript objects are few, so the cap costs no measurable time:
// tracing and compiling the emoji U-Net's full train step took 8.0–8.6 s with or without it; its peak
// RSS went from 539–560 to 526–539 MiB, the LoRA step's from 344–348 to 311–317 MiB (issue 18).
//
// V8 sizes its heap when the process starts, so the cap goes into NODE_OPTIONS where the CLI starts
// itself again (hugepages.js), and from there into every process it starts (a benchmark's children).
// A --max-semi-space-size of the user's own, in the flags or NODE_OPTIONS, is left as it is.

export const YOUNG_GENERATION_OPTION = "--max-semi-space-size=2";

/** NODE_OPTIONS with the cap added, unless `execArgv` or NODE_OPTIONS size the semi-spaces already. */
export function withYoungGenerationCap(nodeOptions = "", execArgv = process.execArgv) {
  const set = [...execArgv, ...nodeOptions.split(/\s+/)].some((f) =>
    /^--max[-_]semi[-_]space[-_]size\b/.test(f),
  );
  return set ? nodeOptions : [nodeOptions.trim(), YOUNG_GENERATION_OPTION].filter(Boolean).join(" ");
}
