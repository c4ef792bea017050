/** Whether this process should start itself again with glibc's huge-page tunable set. */
export function shouldRelaunch(env?: NodeJS.ProcessEnv): boolean;
/** Runs this same command again with the tunable set and ends as it ends; returns only if it could not start. */
export function relaunch(): Promise<void>;
/** In a relaunched process: end when the launching process is gone. */
export function followLauncher(): void;
/** Relaunch where it pays, else follow the launcher if there is one. */
export function withHugePages(): Promise<void>;
