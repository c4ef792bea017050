/** The V8 flag that caps the young generation's semi-spaces (young-generation.js says why). */
export const YOUNG_GENERATION_OPTION: string;
/** NODE_OPTIONS with the cap added, unless `execArgv` or NODE_OPTIONS size the semi-spaces already. */
export function withYoungGenerationCap(nodeOptions?: string, execArgv?: readonly string[]): string;
