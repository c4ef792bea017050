/**
 * Progress display for long commands: one redrawn line with a bar on a terminal, plain log lines
 * otherwise (CI, pipes, files), so logs stay readable.
 */
export interface ProgressFields {
  step: number;
  total: number;
  /** Extra "name value" pairs shown after the bar, e.g. loss. */
  fields?: Record<string, string>;
  /** Items per second (for the ETA). */
  rate?: number;
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(r).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export class Progress {
  private readonly tty: boolean;
  private lastPlain = 0;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
    /** Minimum seconds between plain lines. */
    private readonly plainEvery = 5,
  ) {
    this.tty = Boolean(out.isTTY);
  }

  update(p: ProgressFields): void {
    const frac = p.total > 0 ? Math.min(1, p.step / p.total) : 0;
    const eta = p.rate && p.rate > 0 ? (p.total - p.step) / p.rate : Number.NaN;
    const extra = Object.entries(p.fields ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join("  ");
    if (this.tty) {
      const width = 24;
      const filled = Math.round(frac * width);
      const bar = `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
      const line = `${this.label} ${bar} ${p.step}/${p.total}  ${extra}  ETA ${clock(eta)}`;
      const cols = this.out.columns ?? 120;
      this.out.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
      this.drawn = true;
      return;
    }
    const now = Date.now() / 1000;
    if (now - this.lastPlain >= this.plainEvery || p.step >= p.total) {
      this.lastPlain = now;
      this.out.write(
        `${this.label} ${p.step}/${p.total} (${(frac * 100).toFixed(1)}%)  ${extra}  ETA ${clock(eta)}\n`,
      );
    }
  }

  /** Prints a message on its own line (keeping the bar below it on a terminal). */
  log(msg: string): void {
    if (this.tty && this.drawn) this.out.write("\r\x1b[2K");
    this.out.write(`${msg}\n`);
  }

  done(): void {
    if (this.tty && this.drawn) this.out.write("\n");
    this.drawn = false;
  }
}
