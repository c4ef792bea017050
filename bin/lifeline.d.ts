import type { ChildProcess } from "node:child_process";

export const PING: string;
export const PONG: string;
/** Ends this process when its parent goes away, even while its main thread is stuck. */
export function startWatchdog(opts?: { graceMs?: number; pollMs?: number }): void;
/** Calls `onGone` once when this process's parent goes away; returns a function that stops watching. */
export function watchParent(onGone: () => void, pollMs?: number): () => void;
/** In a relaunched process: answer the launcher's pings. */
export function answerPings(): void;
/** In a launcher: calls `onStuck` when `child` does not answer a ping within `ms`; returns a canceller. */
export function pingChild(child: ChildProcess, ms: number, onStuck: () => void): () => void;
