/**
 * A dataset from a folder of PNG and JPEG files, like torchvision's ImageFolder.
 *
 * With classes (the default when the folder has sub-folders): each sub-folder is a class, named by
 * the folder, indexed in sorted order; its images may sit at any depth below it. Without classes,
 * every image below the folder is used and there are no labels. Files are visited in sorted path
 * order, so the dataset is the same on every machine. Each image is converted to grey or RGB (see
 * raster.ts: alpha over black), centre-cropped to the target aspect ratio and resized (resize.ts).
 * Names starting with "." are skipped; other files are kept only by extension (.png, .jpg, .jpeg).
 */

import { readdirSync, statSync } from "node:fs";
import { extname, join, relative } from "node:path";
import { readImage } from "../io/image-decode.ts";
import { toChannels } from "../io/raster.ts";
import type { ImageDataset } from "./dataset.ts";
import { type ResampleMethod, resizeCrop } from "./resize.ts";

export interface ImageFolderOptions {
  /** Output size: a side for square images, or [height, width]. */
  readonly size: number | readonly [number, number];
  /** 1 (grey) or 3 (RGB). Default 3. */
  readonly channels?: 1 | 3;
  /** Resampling filter (default "area", right for shrinking). */
  readonly resample?: ResampleMethod;
  /** Labels from sub-folders: true, false, or undefined = when the folder has sub-folders. */
  readonly classes?: boolean;
  /** Refuse single images with more pixels than this (default 100 million). */
  readonly maxPixels?: number;
  /** What transparent pixels are composited over (default black). */
  readonly background?: "black" | "white";
}

const IMAGE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg"]);

function list(dir: string): { dirs: string[]; images: string[] } {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch (err) {
    throw new Error(`cannot read image folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const dirs: string[] = [];
  const images: string[] = [];
  for (const name of names) {
    if (name.startsWith(".")) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) dirs.push(p);
    else if (IMAGE_EXTENSIONS.has(extname(name).toLowerCase())) images.push(p);
  }
  return { dirs, images };
}

/** Every image file under `dir`, in sorted order. */
function walk(dir: string): string[] {
  const { dirs, images } = list(dir);
  return [...images, ...dirs.flatMap(walk)].sort();
}

/** Loads every image under `root` into memory. Errors name the file and what is wrong with it. */
export function loadImageFolder(root: string, options: ImageFolderOptions): ImageDataset {
  const [height, width] = typeof options.size === "number" ? [options.size, options.size] : options.size;
  for (const s of [height, width]) {
    if (!Number.isInteger(s) || s < 1)
      throw new Error(`image folder size must be positive integers, got ${options.size}`);
  }
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new Error(`channels must be 1 or 3, got ${channels}`);
  const top = list(root);
  const useClasses = options.classes ?? top.dirs.length > 0;
  const files: string[] = [];
  const fileLabels: number[] = [];
  let classNames: string[] | null = null;
  if (useClasses) {
    if (top.dirs.length === 0) {
      throw new Error(`image folder ${root} has no sub-folders to take classes from; pass classes: false`);
    }
    if (top.images.length > 0) {
      throw new Error(
        `image folder ${root} has images beside its class folders (e.g. ${relative(root, top.images[0]!)}); ` +
          "move them into a class folder, or pass classes: false to use all images without labels",
      );
    }
    classNames = top.dirs.map((d) => relative(root, d));
    top.dirs.forEach((d, label) => {
      const found = walk(d);
      if (found.length === 0) throw new Error(`class folder ${d} has no PNG or JPEG images`);
      for (const f of found) {
        files.push(f);
        fileLabels.push(label);
      }
    });
  } else {
    files.push(...walk(root));
  }
  if (files.length === 0) throw new Error(`image folder ${root} has no PNG or JPEG images`);

  const per = channels * height * width;
  const images = new Float32Array(files.length * per);
  const method = options.resample ?? "area";
  files.forEach((f, i) => {
    const decoded = readImage(f, options.maxPixels === undefined ? {} : { maxPixels: options.maxPixels });
    resizeCrop(toChannels(decoded, channels, options.background), height, width, method, images, i * per);
  });
  return {
    count: files.length,
    channels,
    height,
    width,
    images,
    labels: classNames === null ? null : Int32Array.from(fileLabels),
    classNames,
    files,
  };
}
