// This package's version (`tprun --version`, and the yargs CLI's), from its own package.json.
import { readFile } from 'node:fs/promises';

export async function packageVersion(): Promise<string> {
  return (JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}
