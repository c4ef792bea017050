/**
 * The page's files, read from <package root>/src/web/page/ whether the server runs from src/ (tsx)
 * or from dist/ (tsc copies no assets, and both folders sit two levels below the package root).
 * Only plain names from that one folder are served, checked by pattern and by where they resolve.
 */
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { HttpError } from "./http.ts";

export const pageDir = (): string => fileURLToPath(new URL("../../src/web/page/", import.meta.url));

const NAME = /^[a-z0-9][a-z0-9-]*\.(html|js|css|svg)$/;

/** The bytes of a page file; 404 for names that are not page files. */
export function pageFile(name: string): Uint8Array {
  const root = pageDir();
  const path = join(root, name);
  if (
    !NAME.test(name) ||
    !existsSync(path) ||
    !statSync(path).isFile() ||
    dirname(realpathSync(path)) !== realpathSync(root)
  ) {
    throw new HttpError(404, `no such page file: ${name}`);
  }
  return readFileSync(path);
}
