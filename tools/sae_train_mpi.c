/*
 * sae-train-mpi: sae-train's training on several MPI ranks, data-parallel
 * (every rank holds the model and steps on its share of each batch),
 * feature-sharded (rank r holds its slice of the features and steps on the
 * whole batch) or on a 2-D grid (data-parallel groups of S feature shards:
 * each group steps on its share of each batch, each of its ranks on its
 * slice of the features). Same options as sae-train, plus --parallel and
 * --shards; the same model as one sae-train process with the same options,
 * up to the order of sums.
 *
 *   mpirun -np 4 sae-train-mpi acts.npy --parallel data --d-sae 16384 --save run
 *   mpirun -np 8 --hostfile hosts sae-train-mpi /shared/acts.npy --parallel features \
 *          --d-sae 1M --arch topk --k 32 --save /shared/run
 *   srun -n 8 sae-train-mpi ...                  # Slurm
 *   mpirun -np 3 sae-train-mpi acts.npy --parallel features --resume run --steps 200k
 *   mpirun -np 16 --hostfile hosts sae-train-mpi /shared/acts.npy --parallel grid --shards 4 ...
 *   mpirun -np 4 sae-train-mpi mlp_in.npy --target mlp_out.npy --skip --parallel features ...
 *
 * Every architecture sae-train trains (Gated too) and transcoders (--target,
 * --skip) train in both modes.
 * Every rank maps the data file and reads only the rows it trains on (its
 * share of each batch, its group's share, or the whole batch), plus the
 * recipe's sample.
 * Rank 0 alone prints the progress and the report and writes the log;
 * checkpoints are written collectively (each rank its slices) into one
 * checkpoint directory on a file system all ranks see, which sae-train,
 * SAELens and sae-train-mpi with any number of ranks open.
 *
 * Exit status: 0 done, 1 a libsae call, the transport or a write failed, 2
 * bad command line or input file. A rank that dies makes mpirun end the
 * others.
 */
#include "common/args.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "common/inputs.h"
#include "common/outputs.h"
#include "common/recipe.h"
#include "common/resume.h"
#include "common/train.h"

#include <libsae/sae.h>
#include <libsae/sae_mpi.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { OPT_PARALLEL = 1, OPT_SHARDS, OPT_COMM_STATS };

/* --parallel grid: both of libsae's modes on one optimizer */
#define MODE_GRID (SAE_PARALLEL_DATA | SAE_PARALLEL_FEATURES)

static const struct option long_options[] = {
    TOOL_CONFIG_LONG_OPTIONS,
    TOOL_TARGET_LONG_OPTIONS,
    TOOL_OUTPUTS_LONG_OPTIONS,
    {"parallel", required_argument, NULL, OPT_PARALLEL},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"comm-stats", no_argument, NULL, OPT_COMM_STATS},
    {NULL, 0, NULL, 0},
};

static void usage(const tool_config *defaults)
{
    printf("Usage: mpirun -np N sae-train-mpi [OPTION]... [FILE]\n"
           "Train one sparse autoencoder with libsae %s on N MPI ranks, on FILE or on\n"
           "built-in synthetic data when FILE is omitted.\n\n"
           "Distribution:\n"
           "  --parallel MODE     data: every rank holds the model and steps on its\n"
           "                      share of each batch (--batch is the global batch);\n"
           "                      features: rank r holds features [d_sae r / N,\n"
           "                      d_sae (r+1) / N) and every rank steps on the whole\n"
           "                      batch; grid: N / S data groups of S feature shards\n"
           "                      (--shards S): ranks g S .. g S + S - 1 are group g,\n"
           "                      rank r holds shard r %% S of the features, and each\n"
           "                      group steps on its share of each batch\n"
           "                      (default: data)\n"
           "  --shards S          --parallel grid: the feature shards of each group (S\n"
           "                      divides N; S 1 is data-parallel, S N feature-sharded)\n"
           "  --comm-stats        print what each rank sent per step through the\n"
           "                      optimizer's communicators (steps, resampling,\n"
           "                      checkpoints: calls, bytes; on a grid per axis)\n\n",
           sae_version_string());
    tool_config_help(stdout, defaults);
    tool_target_help(stdout);
    printf("Output (rank 0 writes them; DIR must be on a file system every rank sees):\n"
           "  --log FILE          CSV log, as sae-train's\n"
           "  --save DIR          checkpoint directory (sae-train's layout: SAELens opens\n"
           "                      it, sae-train and sae-train-mpi with any N resume it)\n"
           "  --checkpoint-every N  also every N steps\n"
           "  --resume DIR        continue the run checkpointed in DIR (any N, any mode)\n");
}

/* sae-train-mpi's own options (the shared ones are in tool_config and
 * tool_outputs). */
typedef struct options {
    int mode;   /* SAE_PARALLEL_*, or MODE_GRID */
    uint64_t shards; /* --shards (grid); 0: not given */
    bool comm_stats;
} options;

/* Everything a rank holds, freed in one place. */
typedef struct job {
    sae_comm world;         /* libsae-mpi's, over MPI_COMM_WORLD */
    sae_comm features;      /* grid: the shards of this rank's group (sae_mpi_grid_create) */
    sae_comm data;          /* grid: the ranks of this rank's shard, one per group */
    sae_comm counted[2];    /* --comm-stats: the optimizer's communicators, counted */
    sae_mpi_counts counts[2]; /* [0]: data-parallel and feature-sharded runs; grid: the
                                 feature axis, [1] the data axis */
    tool_config cfg;
    options opt;
    tool_outputs out;
    tool_inputs in;
    sae_model *m;           /* the whole model (data) or this rank's shard */
    sae_optimizer *o;
    tool_run_state state;
    tool_sample sample;
    double scale;
    FILE *log;
    tool_batcher batches;
    tool_progress progress;
    tool_train run;
    char arch[64];
} job;

static bool root(const job *j) { return j->world.rank == 0; }

/* The communicator over the ranks that hold the model's shards (whose rank
 * is this rank's shard), or NULL: every rank holds the whole model. */
static const sae_comm *shard_comm(const job *j)
{
    return j->opt.mode == MODE_GRID ? &j->features
           : j->opt.mode == SAE_PARALLEL_FEATURES ? &j->world : NULL;
}

/* The communicator over the ranks that step on different rows of each batch
 * (whose rank is this rank's share of it), or NULL: every rank steps on the
 * whole batch. */
static const sae_comm *rows_comm(const job *j)
{
    return j->opt.mode == MODE_GRID ? &j->data
           : j->opt.mode == SAE_PARALLEL_DATA ? &j->world : NULL;
}

static const char *mode_name(int mode)
{
    return mode == MODE_GRID ? "grid" : mode == SAE_PARALLEL_DATA ? "data-parallel"
                                                                   : "feature-sharded";
}

/* What every rank would say alike, rank 0 alone says: the other ranks'
 * stderr goes to /dev/null until quiet_end (given quiet_begin's result). */
static int quiet_begin(const job *j)
{
    if (root(j))
        return -1;
    int devnull = open("/dev/null", O_WRONLY), saved = devnull >= 0 ? dup(STDERR_FILENO) : -1;
    if (saved >= 0) {
        fflush(stderr);
        dup2(devnull, STDERR_FILENO);
    }
    if (devnull >= 0)
        close(devnull);
    return saved;
}

static void quiet_end(int saved)
{
    if (saved < 0)
        return;
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
}

static void parse_command_line(job *j, int argc, char **argv)
{
    tool_config *cfg = &j->cfg;
    options *opt = &j->opt;
    tool_config_defaults(cfg);
    const tool_config defaults = *cfg;
    opt->mode = SAE_PARALLEL_DATA;
    int c;
    while ((c = tool_getopt(argc, argv, long_options)) != -1) {
        if (tool_config_option(cfg, c, optarg) || tool_outputs_option(&j->out, c, optarg))
            continue;
        switch (c) {
        case 'h':
            if (root(j))
                usage(&defaults);
            MPI_Finalize();
            exit(0);
        case OPT_PARALLEL:
            if (strcmp(optarg, "data") == 0)
                opt->mode = SAE_PARALLEL_DATA;
            else if (strcmp(optarg, "features") == 0)
                opt->mode = SAE_PARALLEL_FEATURES;
            else if (strcmp(optarg, "grid") == 0)
                opt->mode = MODE_GRID;
            else
                tool_usage_error("--parallel '%s': data, features or grid", optarg);
            break;
        case OPT_SHARDS: opt->shards = tool_arg_count("--shards", optarg, 1); break;
        case OPT_COMM_STATS: opt->comm_stats = true; break;
        }
    }
    tool_config_finish(cfg, argc, argv, optind);
    if (cfg->n_archs > 1)
        tool_usage_error("--arch: sae-train-mpi trains one architecture");
    const uint64_t n = (uint64_t)j->world.n_ranks;
    if (opt->shards && opt->mode != MODE_GRID)
        tool_usage_error("--shards: only with --parallel grid");
    if (opt->mode == MODE_GRID && !opt->shards)
        tool_usage_error("--parallel grid: needs --shards S, the feature shards of each data "
                         "group (N ranks = N / S groups x S shards)");
    if (opt->mode == MODE_GRID && n % opt->shards != 0)
        tool_usage_error("--shards %llu: the %llu ranks do not split into groups of %llu "
                         "shards (ranks = groups x shards)", (unsigned long long)opt->shards,
                         (unsigned long long)n, (unsigned long long)opt->shards);
    tool_outputs_check(&j->out);
}

/* The run's settings (a resumed run's from its checkpoint: this rank's
 * shard of it, feature-sharded), its data, and the checks every rank makes
 * alike. Exits 2 on a contradiction. */
static void load_run(job *j)
{
    const sae_comm *shards = shard_comm(j), *rows = rows_comm(j);
    const bool grid = j->opt.mode == MODE_GRID;
    tool_config_load_run(&j->cfg, j->out.resume_dir, shards ? shards->n_ranks : 0,
                         shards ? shards->rank : 0, &j->m, &j->o, &j->state);
    if (rows && j->cfg.batch < (size_t)rows->n_ranks)
        tool_usage_error("--batch %zu: %s on %d %s needs at least one token per %s",
                         j->cfg.batch, mode_name(j->opt.mode), rows->n_ranks,
                         grid ? "groups" : "ranks", grid ? "group" : "rank");
    if (shards && j->cfg.d_sae < (size_t)shards->n_ranks)
        tool_usage_error("--d-sae %zu: %s on %d shards needs a feature per shard", j->cfg.d_sae,
                         mode_name(j->opt.mode), shards->n_ranks);
    tool_inputs_load(&j->in, &j->cfg);
    if (j->out.resume_dir)
        tool_inputs_check_resume(&j->in, &j->cfg, j->out.resume_dir, &j->state);
}

/* --parallel grid: the two communicators (the arguments were checked: a
 * failure here is the transport's or memory's). Exits 1 on failure. */
static void split_grid(job *j)
{
    if (j->opt.mode != MODE_GRID)
        return;
    int rc = sae_mpi_grid_create(&j->features, &j->data, MPI_COMM_WORLD, (int)j->opt.shards);
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: --parallel grid: %s (%s)\n", tool_program(), sae_status_string(rc),
                sae_mpi_error_detail());
        exit(1);
    }
}

/* Rank 0 makes the checkpoint directory; the others wait for it. */
static void prepare_outputs(job *j)
{
    tool_outputs_prepare(&j->out, root(j));
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Whether every rank got here with status 0 (a rank that failed alone, say
 * out of memory for its shard, must not leave the others waiting in a
 * collective). Returns the worst status. */
static int agree(int status)
{
    int worst = 0;
    if (MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return 1;
    return worst;
}

/* A failure of a libsae call while setting up: one that follows from the
 * options and the data (an invalid argument, a non-finite value) is the
 * same on every rank and rank 0 alone says it; any other (out of memory)
 * the rank that meets it. Returns the exit status. */
static int setup_error(const job *j, int rc, const char *what)
{
    if (rc == SAE_E_INVALID_ARG || rc == SAE_E_NONFINITE) {
        if (root(j))
            tool_library_error(rc, what);
        return 1;
    }
    char where[128];
    snprintf(where, sizeof where, "rank %d: %s", j->world.rank, what);
    return tool_library_error(rc, where);
}

/* Attach comm to the optimizer in mode (through counted[slot] with
 * --comm-stats). Returns 0 or an exit status. */
static int attach(job *j, int mode, const sae_comm *comm, int slot)
{
    int rc;
    if (j->opt.comm_stats) {
        rc = sae_mpi_counting_create(&j->counted[slot], comm, &j->counts[slot]);
        if (rc != SAE_OK) {
            fprintf(stderr, "%s: rank %d: the counting communicator: %s (%s)\n", tool_program(),
                    j->world.rank, sae_status_string(rc), sae_mpi_error_detail());
            return 1;
        }
        comm = &j->counted[slot];
    }
    rc = sae_optimizer_set_comm(j->o, mode, comm);
    if (rc == SAE_E_INVALID_ARG && j->opt.mode == MODE_GRID) { /* alike on every rank */
        if (root(j))
            fprintf(stderr, "%s: --parallel grid: libsae %s refuses the grid's communicators: "
                    "%s\n", tool_program(), sae_version_string(), tool_status(rc));
        return TOOL_EXIT_USAGE;
    }
    return rc == SAE_OK ? 0 : setup_error(j, rc, "attaching the communicator");
}

/* The model (this rank's part), the recipe, the state, the log (rank 0), the
 * batches and the communicator. Returns 0 or an exit status, printed once
 * when every rank meets the problem alike. */
static int set_up(job *j)
{
    tool_config *cfg = &j->cfg;
    const options *opt = &j->opt;
    const tool_outputs *out = &j->out;
    const bool resuming = out->resume_dir != NULL;
    const size_t d_in = j->in.train.cols;
    const sae_comm *shards = shard_comm(j);
    size_t begin = 0, end = 0;
    if (shards)
        sae_shard_range(cfg->d_sae, shards->n_ranks, shards->rank, &begin, &end);
    int rc = resuming ? SAE_OK : tool_make_sae_shard(cfg, d_in, begin, end, &j->m, &j->o);
    if (rc != SAE_OK)
        return setup_error(j, rc, "creating the model");
    j->scale = resuming ? j->state.scale : 1.0;
    /* the same sample on every rank, the same failures: rank 0 says them */
    int quiet = quiet_begin(j);
    int status = tool_recipe_prepare(cfg, &j->in.train, resuming, false, j->m, &j->sample,
                                     &j->scale);
    quiet_end(quiet);
    if (status != 0)
        return status;
    if (!resuming)
        tool_run_state_init(&j->state, cfg, &j->in, j->scale);
    char err[600];
    if (out->log_path && root(j) &&
        !(j->log = tool_csv_open_log(out->log_path, resuming, j->state.step, err, sizeof err))) {
        fprintf(stderr, "%s: %s\n", tool_program(), err);
        return TOOL_EXIT_USAGE;
    }
    if (tool_batcher_start(&j->batches, &j->in.train, cfg->seed, j->scale, j->state.tokens) != 0)
        return setup_error(j, SAE_E_NOMEM, "the batches");
    if (opt->mode != MODE_GRID)
        return attach(j, opt->mode, &j->world, 0);
    if ((rc = attach(j, SAE_PARALLEL_FEATURES, &j->features, 0)) != 0 ||
        (rc = attach(j, SAE_PARALLEL_DATA, &j->data, 1)) != 0)
        return rc;
    return 0;
}


static int train(job *j)
{
    const tool_config *cfg = &j->cfg;
    const options *opt = &j->opt;
    const bool data = opt->mode == SAE_PARALLEL_DATA;
    const int n = j->world.n_ranks;
    const sae_comm *rows = rows_comm(j);
    size_t share_begin = 0, share_end = 0;
    if (rows)
        sae_shard_range(cfg->batch, rows->n_ranks, rows->rank, &share_begin, &share_end);
    char layout[96];
    if (opt->mode == MODE_GRID)
        snprintf(layout, sizeof layout, "grid of %d groups x %d shards", j->data.n_ranks,
                 j->features.n_ranks);
    else
        snprintf(layout, sizeof layout, "%s", mode_name(opt->mode));
    tool_describe_arch(cfg, j->arch, sizeof j->arch);
    if (root(j)) {
        if (j->out.resume_dir)
            fprintf(stderr, "resuming %s at step %llu of %llu\n", j->out.resume_dir,
                    (unsigned long long)j->state.step, (unsigned long long)cfg->steps);
        char compute[160];
        tool_describe_compute(cfg, compute, sizeof compute);
        fprintf(stderr, "training on %s: %zu x %zu (%s); d_sae %zu, %s, lr %g, batch %zu, "
                        "%llu steps; %d ranks, %s; %s\n",
                cfg->input ? cfg->input : "synthetic data", j->in.train.rows, j->in.train.cols,
                j->in.train.format, cfg->d_sae, j->arch, cfg->lr, cfg->batch,
                (unsigned long long)cfg->steps, n, layout, compute);
        tool_progress_init(&j->progress, stderr, isatty(STDERR_FILENO), "", cfg->steps,
                           cfg->log_every);
    }
    tool_train *run = &j->run;
    tool_train_init(run, cfg, j->m, j->o, &j->batches, &j->state, &j->sample);
    run->csv = j->log;
    run->progress = root(j) ? &j->progress : NULL;
    run->checkpoint_dir = j->out.save_dir;
    run->checkpoint_every = j->out.checkpoint_every;
    run->comm = opt->mode == MODE_GRID ? &j->features : &j->world;
    run->rows_comm = rows;
    run->world = &j->world;
    run->replica = opt->mode == MODE_GRID && j->data.rank != 0;
    run->share_begin = share_begin;
    run->share_end = share_end;
    run->target = j->in.target.x ? &j->in.target : NULL;
    int rc = tool_train_run(&j->run);
    if (j->run.bad_row != SIZE_MAX) {
        /* the shards of one group read the same rows: their first says it */
        const sae_comm *shards = shard_comm(j);
        const char *file = j->run.bad_row_in_target ? cfg->target_path : cfg->input;
        if (data || shards->rank == 0)
            fprintf(stderr, "%s: rank %d: %s: row %zu holds NaN or Inf\n", tool_program(),
                    j->world.rank, file ? file : "synthetic data", j->run.bad_row);
        return TOOL_EXIT_USAGE;
    }
    if (rc != SAE_OK) {
        /* every rank returns the step's agreed status: rank 0 says it, and a
         * rank whose own allocation or write failed says that too */
        if (root(j) || rc == SAE_E_NOMEM || rc == SAE_E_IO)
            fprintf(stderr, "%s: rank %d: %s\n", tool_program(), j->world.rank, j->run.error);
        return 1;
    }
    return 0;
}

/* --comm-stats: every rank's calls and bytes per step of the optimizer's
 * collectives (steps, resampling and checkpoints), printed by rank 0; on a grid one line
 * per communicator (features: the group's shards; data: the shard's groups). */
static void print_comm_stats(job *j)
{
    const int n = j->world.n_ranks, axes = j->opt.mode == MODE_GRID ? 2 : 1;
    sae_mpi_counts *all = root(j) ? calloc((size_t)n * 2, sizeof *all) : NULL;
    MPI_Gather(j->counts, (int)sizeof j->counts, MPI_BYTE, all, (int)sizeof j->counts, MPI_BYTE,
               0, MPI_COMM_WORLD);
    if (!root(j) || !all || j->run.steps_run == 0) {
        free(all);
        return;
    }
    static const char *const kinds[4] = {"allreduce_f32", "allreduce_f64", "allgather",
                                         "broadcast"};
    static const char *const axis_names[2] = {"features", "data"};
    const double steps = (double)j->run.steps_run;
    printf("communication per step (payload this rank sent; %s, %d ranks, %llu steps):\n",
           mode_name(j->opt.mode), n, (unsigned long long)j->run.steps_run);
    for (int r = 0; r < n; r++)
        for (int a = 0; a < axes; a++) {
            const sae_mpi_counts *c = &all[(size_t)r * 2 + (size_t)a];
            double bytes = 0.0, calls = 0.0;
            printf("  rank %d:", r);
            if (axes > 1)
                printf(" %s:", axis_names[a]);
            for (int k = 0; k < 4; k++) {
                bytes += (double)c->bytes[k];
                calls += (double)c->calls[k];
                if (c->calls[k])
                    printf(" %s %.1f calls %.0f B;", kinds[k], (double)c->calls[k] / steps,
                           (double)c->bytes[k] / steps);
            }
            printf(" total %.1f calls %.0f bytes\n", calls / steps, bytes / steps);
        }
    free(all);
}

/* Rank 0: what the run did and how the model does (data-parallel: on the
 * evaluation rows; feature-sharded: no rank holds the model, so the last
 * logged training losses). */
static int report(job *j, int status)
{
    const tool_config *cfg = &j->cfg;
    const tool_train *run = &j->run;
    if (j->cfg.normalize) { /* the model takes raw activations from here on */
        int rc = sae_model_fold_input_scale(j->m, j->scale);
        if (rc != SAE_OK && status == 0)
            status = tool_library_error(rc, "folding the input scale into the model");
    }
    if (!root(j) || status != 0)
        return status;
    printf("trained %llu steps (%llu tokens) in %.1f s on %d ranks (%s)\n",
           (unsigned long long)run->steps_run, (unsigned long long)run->tokens_run,
           run->seconds_run, j->world.n_ranks, mode_name(j->opt.mode));
    tool_train_summary(run);
    if (run->steps_done == 0)
        return status;
    if (j->opt.mode != SAE_PARALLEL_DATA) { /* no rank holds the whole model */
        printf("last logged (training batches, step %llu): l2 %.5g  l1 %.5g  l0 %.2f  fvu %.4f  "
               "dead %.1f%%\n", (unsigned long long)run->last.step, run->last.l2, run->last.l1,
               run->last.l0, run->last.fvu, 100.0 * run->last.dead_frac);
        return status;
    }
    int rc = tool_evaluate_print(j->m, &j->in, cfg);
    return rc == SAE_OK ? status : tool_library_error(rc, "evaluating the model");
}

static void job_free(job *j)
{
    if (j->log && fclose(j->log) != 0)
        tool_write_error(j->out.log_path);
    j->log = NULL;
    tool_batcher_free(&j->batches);
    tool_sample_free(&j->sample);
    sae_optimizer_free(j->o);
    sae_model_free(j->m);
    tool_inputs_free(&j->in);
    sae_mpi_counting_free(&j->counted[1]);
    sae_mpi_counting_free(&j->counted[0]);
    sae_mpi_comm_free(&j->data);
    sae_mpi_comm_free(&j->features);
    sae_mpi_comm_free(&j->world);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    tool_set_program(argv[0]);
    static job j; /* zeroed: job_free is safe at any point */
    int rc = sae_mpi_comm_create(&j.world, MPI_COMM_WORLD);
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: the MPI communicator: %s\n", tool_program(), sae_status_string(rc));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* The command line and the inputs are the same on every rank, and so are
     * their errors: rank 0 alone says them (every rank exits 2). */
    int quiet = quiet_begin(&j);
    parse_command_line(&j, argc, argv);
    split_grid(&j);
    load_run(&j);
    prepare_outputs(&j);
    quiet_end(quiet);
    int status = agree(set_up(&j));
    if (status == 0) {
        status = report(&j, train(&j));
        if (j.opt.comm_stats)
            print_comm_stats(&j);
    }
    status = agree(status); /* every rank exits with the same status */
    job_free(&j);
    MPI_Finalize();
    return status;
}
