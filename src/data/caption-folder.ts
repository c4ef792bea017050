/**
 * A folder of images with captions, for fine-tuning a text-to-image model. Captions come, in this
 * order of preference, from:
 *   - `metadata.jsonl` in the folder, one JSON object per line with `file_name` and `text` (the
 *     layout of Hugging Face's ImageFolder, which diffusers' training scripts read);
 *   - a `.txt` file beside each image with the same name (kohya's and many tools' layout);
 *   - one prompt for every image (DreamBooth's instance prompt, e.g. "a photo of sks dog").
 * An image without a caption is an error that names it and the three ways to give one.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, extname, join, relative } from "node:path";
import type { ImageDataset } from "./dataset.ts";
import { loadImageFolder } from "./image-folder.ts";

export interface CaptionFolderOptions {
  readonly size: number;
  readonly channels?: 1 | 3;
  /** Every image's caption (DreamBooth's instance prompt); overrides metadata.jsonl and .txt files. */
  readonly prompt?: string | null;
  /** What transparent pixels are composited over (default white: icons, emoji). */
  readonly background?: "black" | "white";
}

export interface CaptionedDataset extends ImageDataset {
  readonly captions: readonly string[];
  readonly files: readonly string[];
}

/** The captions of metadata.jsonl by file name (relative to the folder), or null when there is none. */
function readMetadata(root: string): Map<string, string> | null {
  const path = join(root, "metadata.jsonl");
  if (!existsSync(path)) return null;
  const out = new Map<string, string>();
  const lines = readFileSync(path, "utf8").split(/\r?\n/);
  for (const [i, line] of lines.entries()) {
    if (line.trim() === "") continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new Error(
        `${path} line ${i + 1} is not JSON (${(e as Error).message}); each line is {"file_name": …, "text": …}`,
      );
    }
    const r = row as Record<string, unknown>;
    const text = r["text"] ?? r["caption"] ?? r["prompt"];
    if (typeof r["file_name"] !== "string" || typeof text !== "string")
      throw new Error(
        `${path} line ${i + 1} needs "file_name" and "text" strings, got ${line.slice(0, 120)}`,
      );
    out.set(r["file_name"].replace(/\\/g, "/"), text.trim());
  }
  return out;
}

/** Loads a captioned image folder (every image below it, in sorted order). */
export function loadCaptionFolder(root: string, opts: CaptionFolderOptions): CaptionedDataset {
  const data = loadImageFolder(root, {
    size: opts.size,
    channels: opts.channels ?? 3,
    classes: false,
    background: opts.background ?? "white",
  });
  const files = data.files ?? [];
  const prompt = opts.prompt?.trim();
  const meta = prompt ? null : readMetadata(root);
  const captions = files.map((f) => {
    if (prompt) return prompt;
    const rel = relative(root, f).replace(/\\/g, "/");
    const fromMeta = meta?.get(rel);
    if (fromMeta !== undefined) return fromMeta;
    const txt = join(f, "..", `${basename(f, extname(f))}.txt`);
    if (existsSync(txt)) return readFileSync(txt, "utf8").trim();
    throw new Error(
      `${f} has no caption: list it in ${join(root, "metadata.jsonl")} ({"file_name": "${rel}", "text": "…"}), put the caption in ${txt}, or give one prompt for every image (--instance-prompt)`,
    );
  });
  const empty = captions.indexOf("");
  if (empty >= 0) throw new Error(`${files[empty]} has an empty caption; write what the image shows`);
  return { ...data, captions, files };
}
