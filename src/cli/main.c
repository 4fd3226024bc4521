/* main.c — entry point: MPI set-up, options, dispatch to the commands (cli/commands.h). */
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/ckpt/rawio.h"
#include "cfsp/cli/commands.h"
#include "cfsp/cli/options.h"
#include "cfsp/format/safetensors.h"
#include "cfsp/util/blas_env.h"
#include "cfsp/util/err.h"
#include <mpi.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    blas_fix_coretype(argv);                           /* may re-execute once (blas_env.c) */
    /* FUNNELED: the checkpoint writer runs a thread that never calls MPI (rawio.c) */
    int provided = MPI_THREAD_SINGLE;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "cfsp-mpi: error: MPI_Init_thread failed\n");
        return 1;
    }
    raw_set_threaded(provided >= MPI_THREAD_FUNNELED);
    int rank = 0, size = 1;
    /* errors returned, not fatal, from here on: MPI_CHECK reports them (DIE names the rank) */
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    cfsp_err_init(rank, size);
    cfsp_install_signal_cleanup();
    blas_set_threads();
    if (argc > 1 && !strcmp(argv[1], "export")) {      /* serial, on rank 0 (export_cmd.c) */
        int xrc = rank == 0 ? export_main(argc - 1, argv + 1) : 0;
        cfsp_sync(xrc < 0 ? -1 : 0);
        cfsp_exit_all(0);
    }
    if (argc > 1 && !strcmp(argv[1], "plan")) {         /* the pipeline simulator (plan_cmd.c), rank 0 */
        cfsp_sync(rank == 0 ? plan_command(argc - 1, argv + 1) : 0);
        cfsp_exit_all(0);
    }
    if (argc > 1 && !strcmp(argv[1], "tokenize")) {     /* rank 0 tokenizes (tokenize_cmd.c) */
        cfsp_sync(tokenize_command(argc, argv));
        cfsp_exit_all(0);
    }
    if (argc > 1 && !strcmp(argv[1], "recover")) {      /* LoRA recovery fine-tuning (recover_cmd.c) */
        recover_command(argc - 1, argv + 1);
        cfsp_exit_all(0);
    }
    options o;
    int rc = options_parse(argc, argv, &o);
    cfsp_sync(rc);
    if (o.help) cfsp_exit_all(0);                      /* rank 0 printed the table */
    if (o.command[0] == 'v') {
        if (rank == 0 && o.model[0]) {                 /* NaN / Inf in a safetensors checkpoint */
            st_model st;
            rc = st_open_dir(o.model, &st);
            if (!rc) {
                rc = st_scan_finite(&st, o.model);
                st_close(&st);
            }
        } else rc = rank == 0 ? model_h5_verify(o.verify_file) : 0;
        cfsp_sync(rc);
        cfsp_exit_all(0);
    }
    cfsp_run(&o);
    MPI_CHECK(MPI_Finalize());
    return 0;
}
