/** Runs a command-line entry point with its console output and progress lines silenced. */
export async function quietly(run: () => Promise<void>): Promise<void> {
  const [log, err] = [console.log, process.stderr.write];
  console.log = () => {};
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    await run();
  } finally {
    console.log = log;
    process.stderr.write = err;
  }
}
