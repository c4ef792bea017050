/** Whether this process should start itself again with glibc's huge-page tunable set. */
export function shouldRelaunch(env?: NodeJS.ProcessEnv): boolean;
/**
 * Runs this same command again with the tunable set and ends as it ends; returns only if it could not
 * start. With `followParent`, the relaunched process is stopped when this one's parent goes away.
 */
export function relaunch(opts?: { followParent?: boolean }): Promise<void>;
/** In a relaunched process: end when the launching process is gone (even while stuck), answer its pings. */
export function followLauncher(): void;
/** Relaunch where it pays, else follow the launcher if there is one; `followParent`: end with the parent. */
export function withHugePages(opts?: { followParent?: boolean }): Promise<void>;
