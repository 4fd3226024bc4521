/* run.h — the commands: run (calibrate, prune every requested method and ratio, evaluate, write),
 * prune --stats (the same from a saved statistics file, no forward pass), verify. */
#ifndef CFSP_RUN_H
#define CFSP_RUN_H
#include "cfsp/options.h"
int cfsp_run(const options *o);        /* collective; exits through cfsp_sync on bad input */
#endif
