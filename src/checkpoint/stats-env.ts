// The one name `tprun convert` and its benchmarks (`tprun bench convert`, `bench build`) share. A module
// of its own, below both: the benchmarks need the name without the command (which would make bench and
// commands import each other), and the command needs it without loading the conversion code at startup.

/** Where each rank's RankStats (checkpoint/convert.ts) go, one JSON file per rank, when set. */
export const STATS_ENV = 'TPRUN_CONVERT_STATS_DIR';
