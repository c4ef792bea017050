/**
 * File-system checks whose errors say what is wrong with a path and how to fix it, instead of a raw
 * errno ("EACCES: permission denied, scandir …") or a misleading consequence (an unreadable model
 * folder looking like one without config.json; an output "folder" that is a file failing with EEXIST
 * at the end of a run). Callers check before the work starts.
 */
import { accessSync, constants, existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

/** What an errno means, in words ("permission denied", "read-only file system", …). */
export function fsReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case "EACCES":
    case "EPERM":
      return `permission denied (${code})`;
    case "EROFS":
      return "read-only file system (EROFS)";
    case "ENOENT":
      return "no such file or folder (ENOENT)";
    case "ENOTDIR":
      return "a part of the path is a file, not a folder (ENOTDIR)";
    case "ELOOP":
      return "too many symbolic links (ELOOP)";
    default:
      return code ?? (e as Error)?.message ?? String(e);
  }
}

/**
 * Checks that a folder and what lies in it down to `depth` levels can be read (folders also entered);
 * the error names the first path that cannot, why, and the fix.
 */
export function checkReadableTree(root: string, what: string, depth = 2): void {
  const refuse = (path: string, e: unknown): never => {
    throw new Error(
      `cannot read ${path}: ${fsReason(e)}; make ${what} readable (chmod -R u+rX ${root}) or run as the user who owns it`,
    );
  };
  const visit = (path: string, left: number) => {
    let dir: boolean;
    try {
      dir = statSync(path).isDirectory();
      accessSync(path, dir ? constants.R_OK | constants.X_OK : constants.R_OK);
    } catch (e) {
      return refuse(path, e);
    }
    if (!dir || left === 0) return;
    let names: string[];
    try {
      names = readdirSync(path);
    } catch (e) {
      return refuse(path, e);
    }
    for (const name of names) visit(join(path, name), left - 1);
  };
  visit(root, depth);
}

/**
 * Checks that `dir` is, or can be created as, a folder this process can write: not a file, and the
 * folder (or its nearest existing parent) writable. `flag` names what set it ("--out").
 */
export function checkOutputDir(dir: string, flag: string): void {
  const target = resolve(dir);
  let at = target;
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at);
  let isDir: boolean;
  try {
    isDir = statSync(at).isDirectory();
  } catch (e) {
    throw new Error(`${flag} ${dir}: cannot use ${at}: ${fsReason(e)}`);
  }
  if (!isDir) {
    throw new Error(
      at === target
        ? `${flag} ${dir} is a file, not a folder; pass a folder (it is created if missing)`
        : `${flag} ${dir}: ${at} is a file, so no folder can be made under it; pass another folder`,
    );
  }
  try {
    accessSync(at, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new Error(`${flag} ${dir}: cannot write in ${at}: ${fsReason(e)}; pass a folder you can write to`);
  }
}
