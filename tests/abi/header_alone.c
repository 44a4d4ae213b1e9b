/* The public header on its own: this file includes nothing else, so each name
 * below must come from <libsae/sae.h> itself (size_t, uint64_t included).
 * CTest compiles it as C99, C11, C++11 and C++17 with gcc and clang and
 * -Wall -Wextra -Wpedantic -Werror (tests/abi/CMakeLists.txt).
 *
 * It also pins the 0.1 and 0.2 APIs at the source level: each function is assigned to
 * a pointer of its exact 0.1 type (a changed signature is an error in C++ and
 * an incompatible-pointer warning, made an error, in C), and each enumerator to
 * its pinned value. */
#include <libsae/sae.h>

#define SAE_TEST_PIN(name, cond) typedef char name[(cond) ? 1 : -1]

SAE_TEST_PIN(sae_test_status_ok, SAE_OK == 0);
SAE_TEST_PIN(sae_test_status_invalid_arg, SAE_E_INVALID_ARG == -1);
SAE_TEST_PIN(sae_test_status_nomem, SAE_E_NOMEM == -2);
SAE_TEST_PIN(sae_test_status_nonfinite, SAE_E_NONFINITE == -3);
SAE_TEST_PIN(sae_test_status_io, SAE_E_IO == -4);
SAE_TEST_PIN(sae_test_status_format, SAE_E_FORMAT == -5);
SAE_TEST_PIN(sae_test_status_state, SAE_E_STATE == -6);
SAE_TEST_PIN(sae_test_status_comm, SAE_E_COMM == -7);
SAE_TEST_PIN(sae_test_tensor_w_enc, SAE_W_ENC == 0);
SAE_TEST_PIN(sae_test_tensor_b_enc, SAE_B_ENC == 1);
SAE_TEST_PIN(sae_test_tensor_w_dec, SAE_W_DEC == 2);
SAE_TEST_PIN(sae_test_tensor_b_dec, SAE_B_DEC == 3);
SAE_TEST_PIN(sae_test_opt_lr, SAE_OPT_LR == 1);
SAE_TEST_PIN(sae_test_opt_beta1, SAE_OPT_BETA1 == 2);
SAE_TEST_PIN(sae_test_opt_beta2, SAE_OPT_BETA2 == 3);
SAE_TEST_PIN(sae_test_opt_eps, SAE_OPT_EPS == 4);
SAE_TEST_PIN(sae_test_opt_l1_coeff, SAE_OPT_L1_COEFF == 5);
SAE_TEST_PIN(sae_test_opt_grad_clip, SAE_OPT_GRAD_CLIP == 6);
SAE_TEST_PIN(sae_test_tensor_threshold, SAE_THRESHOLD == 4);
SAE_TEST_PIN(sae_test_opt_threads, SAE_OPT_THREADS == 7);
SAE_TEST_PIN(sae_test_opt_kernel, SAE_OPT_KERNEL == 8);
SAE_TEST_PIN(sae_test_opt_total_steps, SAE_OPT_TOTAL_STEPS == 9);
SAE_TEST_PIN(sae_test_opt_l1_warmup, SAE_OPT_L1_WARMUP_FRACTION == 10);
SAE_TEST_PIN(sae_test_opt_lr_warmup, SAE_OPT_LR_WARMUP_STEPS == 11);
SAE_TEST_PIN(sae_test_opt_lr_decay, SAE_OPT_LR_DECAY_FRACTION == 12);
SAE_TEST_PIN(sae_test_opt_lr_schedule, SAE_OPT_LR_SCHEDULE == 13);
SAE_TEST_PIN(sae_test_opt_auxk_coeff, SAE_OPT_AUXK_COEFF == 20);
SAE_TEST_PIN(sae_test_opt_auxk_k, SAE_OPT_AUXK_K == 21);
SAE_TEST_PIN(sae_test_opt_dead_window, SAE_OPT_DEAD_WINDOW == 22);
SAE_TEST_PIN(sae_test_opt_jumprelu_bandwidth, SAE_OPT_JUMPRELU_BANDWIDTH == 23);
SAE_TEST_PIN(sae_test_opt_threshold_beta, SAE_OPT_THRESHOLD_BETA == 24);
SAE_TEST_PIN(sae_test_kernel_auto, SAE_KERNEL_AUTO == 0);
SAE_TEST_PIN(sae_test_kernel_dense, SAE_KERNEL_DENSE == 1);
SAE_TEST_PIN(sae_test_kernel_sparse, SAE_KERNEL_SPARSE == 2);
SAE_TEST_PIN(sae_test_arch_relu, SAE_ARCH_RELU == 0);
SAE_TEST_PIN(sae_test_arch_topk, SAE_ARCH_TOPK == 1);
SAE_TEST_PIN(sae_test_arch_batchtopk, SAE_ARCH_BATCHTOPK == 2);
SAE_TEST_PIN(sae_test_arch_jumprelu, SAE_ARCH_JUMPRELU == 3);
SAE_TEST_PIN(sae_test_lr_constant, SAE_LR_CONSTANT == 0);
SAE_TEST_PIN(sae_test_lr_linear, SAE_LR_LINEAR == 1);
SAE_TEST_PIN(sae_test_lr_cosine, SAE_LR_COSINE == 2);
SAE_TEST_PIN(sae_test_b_dec_mean, SAE_B_DEC_MEAN == 0);
SAE_TEST_PIN(sae_test_b_dec_median, SAE_B_DEC_GEOMETRIC_MEDIAN == 1);
SAE_TEST_PIN(sae_test_version, SAE_VERSION_NUMBER == SAE_VERSION_MAJOR * 10000 +
                                   SAE_VERSION_MINOR * 100 + SAE_VERSION_PATCH);
SAE_TEST_PIN(sae_test_option_lower_open, SAE_OPTION_LOWER_OPEN == 1);
SAE_TEST_PIN(sae_test_option_upper_open, SAE_OPTION_UPPER_OPEN == 2);
SAE_TEST_PIN(sae_test_option_whole, SAE_OPTION_WHOLE == 4);
/* The frozen generator state: four 64-bit words and nothing else (0.2). */
SAE_TEST_PIN(sae_test_rng_size, sizeof(sae_rng) == 4 * sizeof(uint64_t));
/* The frozen struct: four doubles, in this order, and nothing else. */
SAE_TEST_PIN(sae_test_losses_size, sizeof(sae_losses) == 4 * sizeof(double));
SAE_TEST_PIN(sae_test_losses_l0, sizeof(((sae_losses *)0)->l0) == sizeof(double));

/* Every 0.1 function with its exact type. Not static, so that no compiler
 * warns about an unused variable; nothing here is ever called. */
struct sae_test_api {
    unsigned (*version_number)(void);
    const char *(*version_string)(void);
    const char *(*status_string)(int);
    int (*model_create)(sae_model **, size_t, size_t, uint64_t);
    void (*model_free)(sae_model *);
    size_t (*model_d_in)(const sae_model *);
    size_t (*model_d_sae)(const sae_model *);
    size_t (*model_tensor_size)(const sae_model *, int);
    int (*model_get_tensor)(const sae_model *, int, float *, size_t);
    int (*model_set_tensor)(sae_model *, int, const float *, size_t);
    int (*model_create_arch)(sae_model **, size_t, size_t, uint64_t, int, double);
    int (*model_arch)(const sae_model *);
    size_t (*model_k)(const sae_model *);
    int (*encode)(const sae_model *, const float *, size_t, float *);
    int (*decode)(const sae_model *, const float *, size_t, float *);
    int (*loss)(const sae_model *, const float *, size_t, double, sae_losses *);
    int (*fvu)(const sae_model *, const float *, size_t, double *);
    int (*optimizer_create)(sae_optimizer **, const sae_model *);
    void (*optimizer_free)(sae_optimizer *);
    int (*optimizer_set)(sae_optimizer *, int, double);
    int (*optimizer_get)(const sae_optimizer *, int, double *);
    uint64_t (*optimizer_steps)(const sae_optimizer *);
    int (*step)(sae_model *, sae_optimizer *, const float *, size_t, sae_losses *);
    int (*optimizer_tokens_since_fired)(const sae_optimizer *, uint64_t *, size_t);
    int (*optimizer_dead_count)(const sae_optimizer *, uint64_t, size_t *);
    int (*model_save_size)(const sae_model *, size_t *);
    int (*model_save_buffer)(const sae_model *, void *, size_t, size_t *);
    int (*model_save)(const sae_model *, const char *);
    int (*model_load_buffer)(sae_model **, const void *, size_t);
    int (*model_load)(sae_model **, const char *);
    int (*optimizer_save_size)(const sae_optimizer *, size_t *);
    int (*optimizer_save_buffer)(const sae_optimizer *, void *, size_t, size_t *);
    int (*optimizer_save)(const sae_optimizer *, const char *);
    int (*optimizer_load_buffer)(sae_optimizer **, const sae_model *, const void *, size_t);
    int (*optimizer_load)(sae_optimizer **, const sae_model *, const char *);
    int (*optimizer_lr_at)(const sae_optimizer *, uint64_t, double *);
    int (*optimizer_l1_coeff_at)(const sae_optimizer *, uint64_t, double *);
    int (*estimate_input_scale)(const float *, size_t, size_t, double *);
    int (*model_fold_input_scale)(sae_model *, double);
    int (*model_init_b_dec)(sae_model *, const float *, size_t, int);
    int (*optimizer_dead_features)(const sae_optimizer *, uint64_t, size_t *, size_t, size_t *);
    int (*resample_dead)(sae_model *, sae_optimizer *, const float *, size_t, uint64_t, uint64_t, size_t *);
    int (*feature_density_histogram)(const sae_model *, const float *, size_t, double, double, size_t, uint64_t *, size_t *);
};

#ifdef __cplusplus
extern "C" {
#endif
extern const struct sae_test_api sae_test_api_0_1;
#ifdef __cplusplus
}
#endif

const struct sae_test_api sae_test_api_0_1 = {
    sae_version_number,
    sae_version_string,
    sae_status_string,
    sae_model_create,
    sae_model_free,
    sae_model_d_in,
    sae_model_d_sae,
    sae_model_tensor_size,
    sae_model_get_tensor,
    sae_model_set_tensor,
    sae_model_create_arch,
    sae_model_arch,
    sae_model_k,
    sae_encode,
    sae_decode,
    sae_loss,
    sae_fvu,
    sae_optimizer_create,
    sae_optimizer_free,
    sae_optimizer_set,
    sae_optimizer_get,
    sae_optimizer_steps,
    sae_step,
    sae_optimizer_tokens_since_fired,
    sae_optimizer_dead_count,
    sae_model_save_size,
    sae_model_save_buffer,
    sae_model_save,
    sae_model_load_buffer,
    sae_model_load,
    sae_optimizer_save_size,
    sae_optimizer_save_buffer,
    sae_optimizer_save,
    sae_optimizer_load_buffer,
    sae_optimizer_load,
    sae_optimizer_lr_at,
    sae_optimizer_l1_coeff_at,
    sae_estimate_input_scale,
    sae_model_fold_input_scale,
    sae_model_init_b_dec,
    sae_optimizer_dead_features,
    sae_resample_dead,
    sae_feature_density_histogram,
};

/* The enum types are named and complete. */
enum sae_status sae_test_status = SAE_OK;
enum sae_tensor sae_test_tensor = SAE_W_DEC;
enum sae_option sae_test_option = SAE_OPT_GRAD_CLIP;
enum sae_kernel sae_test_kernel = SAE_KERNEL_AUTO;
enum sae_arch sae_test_arch = SAE_ARCH_TOPK;
enum sae_lr_schedule sae_test_lr_schedule = SAE_LR_COSINE;
enum sae_b_dec_init sae_test_b_dec_init = SAE_B_DEC_MEAN;

/* Every 0.2 addition with its exact type. */
struct sae_test_api_0_2_type {
    const char *(*error_detail)(void);
    int (*model_clone)(sae_model **, const sae_model *);
    const char *(*option_name)(int);
    int (*option_default)(int, double *);
    int (*option_bounds)(int, double *, double *, unsigned *);
    int (*feature_fire_counts)(const sae_model *, const float *, size_t, uint64_t *, size_t);
    int (*total_variance)(const float *, size_t, size_t, double *, double *);
    void (*rng_seed)(sae_rng *, uint64_t, uint64_t);
    uint64_t (*rng_next)(sae_rng *);
    double (*rng_uniform)(sae_rng *);
    double (*rng_normal)(sae_rng *);
    uint64_t (*rng_below)(sae_rng *, uint64_t);
    int (*rng_shuffle)(sae_rng *, uint64_t *, size_t);
    int (*checkpoint_abort)(const char *, const char *);
    int (*checkpoint_begin)(const char *, char *, size_t);
    int (*checkpoint_commit)(const char *, const char *);
    int (*checkpoint_current)(const char *, char *, size_t);
    int (*decoder_neighbors)(const sae_model *, size_t, uint32_t *, float *, size_t);
    int (*encode_sparse)(const sae_model *, const float *, size_t, size_t, size_t *, uint32_t *,
                         float *, size_t, size_t *);
    int (*encode_sparse_size)(const sae_model *, const float *, size_t, size_t, size_t *);
    int (*feature_stats_add)(sae_feature_stats *, const sae_model *, const float *, size_t);
    int (*feature_stats_add_sparse)(sae_feature_stats *, size_t, const size_t *, const uint32_t *,
                                    const float *);
    int (*feature_stats_bin_edges)(const sae_feature_stats *, double *, size_t);
    size_t (*feature_stats_bins)(const sae_feature_stats *);
    int (*feature_stats_counts)(const sae_feature_stats *, uint64_t *, size_t);
    int (*feature_stats_create)(sae_feature_stats **, size_t, size_t, size_t, double, double);
    size_t (*feature_stats_d_sae)(const sae_feature_stats *);
    void (*feature_stats_free)(sae_feature_stats *);
    int (*feature_stats_histogram)(const sae_feature_stats *, uint64_t *, size_t);
    int (*feature_stats_load)(sae_feature_stats **, const char *);
    int (*feature_stats_load_buffer)(sae_feature_stats **, const void *, size_t);
    int (*feature_stats_max)(const sae_feature_stats *, float *, size_t);
    int (*feature_stats_merge)(sae_feature_stats *, const sae_feature_stats *);
    uint64_t (*feature_stats_next_row)(const sae_feature_stats *);
    uint64_t (*feature_stats_rows)(const sae_feature_stats *);
    int (*feature_stats_save)(const sae_feature_stats *, const char *);
    int (*feature_stats_save_buffer)(const sae_feature_stats *, void *, size_t, size_t *);
    int (*feature_stats_save_size)(const sae_feature_stats *, size_t *);
    int (*feature_stats_set_next_row)(sae_feature_stats *, uint64_t);
    int (*feature_stats_sums)(const sae_feature_stats *, double *, double *, size_t);
    int (*feature_stats_top)(const sae_feature_stats *, size_t, uint64_t *, float *, size_t,
                             size_t *);
    size_t (*feature_stats_top_n)(const sae_feature_stats *);
    int (*fvu_target)(const sae_model *, const float *, const float *, size_t, double *);
    int (*gemm_backend)(int);
    int (*loss_levels)(const sae_model *, const float *, size_t, double *, size_t);
    int (*loss_target)(const sae_model *, const float *, const float *, size_t, double,
                       sae_losses *);
    int (*max_cosine)(const float *, size_t, const float *, size_t, size_t, float *, uint32_t *);
    int (*model_create_matryoshka)(sae_model **, size_t, size_t, uint64_t, size_t, const size_t *,
                                   size_t);
    int (*model_create_matryoshka_shard)(sae_model **, size_t, size_t, size_t, size_t, uint64_t,
                                         size_t, const size_t *, size_t);
    int (*model_create_shard)(sae_model **, size_t, size_t, size_t, size_t, uint64_t, int, double);
    int (*model_create_transcoder)(sae_model **, size_t, size_t, size_t, uint64_t, int, int,
                                   double);
    int (*model_create_transcoder_shard)(sae_model **, size_t, size_t, size_t, size_t, size_t,
                                         uint64_t, int, int, double);
    size_t (*model_d_out)(const sae_model *);
    int (*model_kind)(const sae_model *);
    int (*model_load_shard)(sae_model **, const char *, size_t, size_t);
    size_t (*model_matryoshka_levels)(const sae_model *);
    int (*model_matryoshka_widths)(const sae_model *, size_t *, size_t);
    int (*model_reinit)(sae_model *, uint64_t, double);
    int (*model_save_collective)(const sae_model *, const sae_comm *, const char *);
    int (*model_shard)(const sae_model *, size_t *, size_t *, size_t *);
    int (*optimizer_save_collective)(const sae_optimizer *, const sae_comm *, const char *);
    int (*checkpoint_save_collective)(const sae_model *, const sae_optimizer *, const char *);
    int (*optimizer_set_comm)(sae_optimizer *, int, const sae_comm *);
    int (*output)(const sae_model *, const float *, size_t, float *);
    int (*shard_range)(size_t, int, int, size_t *, size_t *);
    int (*step_target)(sae_model *, sae_optimizer *, const float *, const float *, size_t,
                       sae_losses *);
};

#ifdef __cplusplus
extern "C" {
#endif
extern const struct sae_test_api_0_2_type sae_test_api_0_2;
#ifdef __cplusplus
}
#endif

const struct sae_test_api_0_2_type sae_test_api_0_2 = {
    sae_error_detail,
    sae_model_clone,
    sae_option_name,
    sae_option_default,
    sae_option_bounds,
    sae_feature_fire_counts,
    sae_total_variance,
    sae_rng_seed,
    sae_rng_next,
    sae_rng_uniform,
    sae_rng_normal,
    sae_rng_below,
    sae_rng_shuffle,
    sae_checkpoint_abort,
    sae_checkpoint_begin,
    sae_checkpoint_commit,
    sae_checkpoint_current,
    sae_decoder_neighbors,
    sae_encode_sparse,
    sae_encode_sparse_size,
    sae_feature_stats_add,
    sae_feature_stats_add_sparse,
    sae_feature_stats_bin_edges,
    sae_feature_stats_bins,
    sae_feature_stats_counts,
    sae_feature_stats_create,
    sae_feature_stats_d_sae,
    sae_feature_stats_free,
    sae_feature_stats_histogram,
    sae_feature_stats_load,
    sae_feature_stats_load_buffer,
    sae_feature_stats_max,
    sae_feature_stats_merge,
    sae_feature_stats_next_row,
    sae_feature_stats_rows,
    sae_feature_stats_save,
    sae_feature_stats_save_buffer,
    sae_feature_stats_save_size,
    sae_feature_stats_set_next_row,
    sae_feature_stats_sums,
    sae_feature_stats_top,
    sae_feature_stats_top_n,
    sae_fvu_target,
    sae_gemm_backend,
    sae_loss_levels,
    sae_loss_target,
    sae_max_cosine,
    sae_model_create_matryoshka,
    sae_model_create_matryoshka_shard,
    sae_model_create_shard,
    sae_model_create_transcoder,
    sae_model_create_transcoder_shard,
    sae_model_d_out,
    sae_model_kind,
    sae_model_load_shard,
    sae_model_matryoshka_levels,
    sae_model_matryoshka_widths,
    sae_model_reinit,
    sae_model_save_collective,
    sae_model_shard,
    sae_optimizer_save_collective,
    sae_checkpoint_save_collective,
    sae_optimizer_set_comm,
    sae_output,
    sae_shard_range,
    sae_step_target,
};

enum sae_option_flags sae_test_option_flags = SAE_OPTION_WHOLE;
