#!/usr/bin/env node
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';

const cli = yargs(hideBin(process.argv)).scriptName('tprun').strict();
for (const c of commands) cli.command(c);
await cli.demandCommand(1).help().parseAsync();
