/* commands.h — the subcommands of cfsp-mpi (layer: cli), each in its own file of src/cli; main.c
 * dispatches on argv[1]. Library modules below the CLI declare no commands. */
#ifndef CFSP_COMMANDS_H
#define CFSP_COMMANDS_H
#include "cfsp/cli/options.h"

/* run (calibrate, prune every requested method and ratio, evaluate, write) and prune --stats (the
 * same from a saved statistics file, no forward pass); src/cli/run.c. Collective; exits through
 * cfsp_sync on bad input. */
int cfsp_run(const options *o);
/* `cfsp-mpi plan`: the pipeline simulator (src/cli/plan_cmd.c); argv[0] == "plan"; 0 or -1 (FAIL) */
int plan_command(int argc, char **argv);
/* `cfsp-mpi export ...` (argv[0] = "export"; src/cli/export_cmd.c); serial; 0 or -1 with a FAIL message */
int export_main(int argc, char **argv);
/* `cfsp-mpi tokenize --model DIR IN.txt OUT.u32.bin [--bos 1|0] [--force]` (src/cli/tokenize_cmd.c);
 * collective: rank 0 works, every rank returns the exit status. */
int tokenize_command(int argc, char **argv);
/* `cfsp-mpi recover ...` (argv[0] = "recover"; src/cli/recover_cmd.c); collective, returns 0 */
int recover_command(int argc, char **argv);
#endif
