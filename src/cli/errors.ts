// Errors meant for the user: one line, what is wrong and what to do, and an exit code.

/** A user-facing error; the CLI prints `meshd: <message>` and exits with `exitCode`. */
export class CliError extends Error {
  /** Process exit code. */
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}
