/* plan.h — `cfsp-mpi plan`: the pipeline simulator. For a config.json and a rank count it prints
 * the stage map (units per rank), each stage's cost per micro-batch from a measured (or given)
 * sgemm rate, the fill/drain bubble, the load balance and the predicted calibration efficiency
 * and time, without loading any weights. */
#ifndef CFSP_PLAN_H
#define CFSP_PLAN_H
int plan_command(int argc, char **argv);   /* argv[0] == "plan"; returns 0 or -1 (FAIL) */
#endif
