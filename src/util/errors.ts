// Small helpers for errors of unknown type (what a catch clause gets).

/** The message of an Error, or the value as text. */
export function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whether err is a Node.js system error with this code (ENOENT, EEXIST, ...). */
export function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}
