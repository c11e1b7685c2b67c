/**
 * One-line log records on stderr: "<iso time> <level> <message>". Secrets
 * registered with redact() never appear in a line (replaced by "***").
 */
export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  redact(secret: string): void;
}

export function createLogger(opts: { level?: Level; sink?: (line: string) => void } = {}): Logger {
  const min = ORDER[opts.level ?? "info"];
  const sink = opts.sink ?? ((l: string) => process.stderr.write(l + "\n"));
  const secrets: string[] = [];
  const emit = (level: Level, msg: string): void => {
    if (ORDER[level] < min) return;
    let line = `${new Date().toISOString()} ${level} ${msg}`;
    for (const s of secrets) line = line.split(s).join("***");
    sink(line);
  };
  return {
    debug: (m) => emit("debug", m),
    info: (m) => emit("info", m),
    warn: (m) => emit("warn", m),
    error: (m) => emit("error", m),
    redact: (s) => {
      if (s) secrets.push(s);
    },
  };
}
