/*
 * SAELens's cfg.json: written beside a model saved into a directory, so that
 * SAE.load_from_disk opens it, and checked when a directory is loaded, so
 * that libsae never loads weights SAELens would compute differently (see
 * sae_model_load in sae.h).
 */
#include "checkpoint.h"
#include "fileio.h"
#include "json.h"

#include <string.h>

#define CONFIG_MAX_BYTES (1u << 20)

/* The layout is SAELens 6's (the config dataclass's fields at the top level,
 * "metadata" with "sae_lens_version"), and the keys beyond the essentials are
 * those older SAELens versions (before 6.0) require to build their SAEConfig,
 * which 6.x ignores in a native configuration. A TopK SAE is "architecture": "topk" with "k" (6.x) and
 * "activation_fn_str": "topk" with "activation_fn_kwargs": {"k": k} (5.x,
 * and 6.x's conversion of pre-6.0 configurations, which reads k there);
 * JumpReLU and BatchTopK SAEs are "jumprelu", with ReLU as the activation
 * inside the jump. "metadata" names the producer. */
int sae__config_write(const sae_model *m, const sae_st_sink *sink)
{
    sae_emitter e = {.sink = sink};
    const int arch = sae__saelens_arch(m->arch);
    const bool transcoder = m->kind != SAE_KIND_AUTOENCODER;
    sae__emit_str(&e, "{\n  \"architecture\": ");
    sae__emit_json_string(&e, sae__saelens_name(m->arch, m->kind));
    sae__emit_str(&e, ",\n  \"d_in\": ");
    sae__emit_u64(&e, m->d_in);
    sae__emit_str(&e, ",\n  \"d_sae\": ");
    sae__emit_u64(&e, sae__total_features(m));
    if (transcoder) { /* SAELens's TranscoderConfig */
        sae__emit_str(&e, ",\n  \"d_out\": ");
        sae__emit_u64(&e, m->d_out);
    }
    if (arch == SAE_ARCH_TOPK) {
        sae__emit_str(&e, ",\n  \"k\": ");
        sae__emit_u64(&e, m->k);
        sae__emit_str(&e, ",\n  \"rescale_acts_by_decoder_norm\": false");
    }
    sae__emit_str(&e, ",\n"
                      "  \"dtype\": \"float32\",\n"
                      "  \"device\": \"cpu\",\n");
    /* a transcoder's input is not centred (b_dec is in the output's space) */
    sae__emit_str(&e, transcoder ? "  \"apply_b_dec_to_input\": false,\n"
                                 : "  \"apply_b_dec_to_input\": true,\n");
    sae__emit_str(&e, "  \"normalize_activations\": \"none\",\n");
    if (arch == SAE_ARCH_TOPK) {
        sae__emit_str(&e, "  \"activation_fn_str\": \"topk\",\n"
                          "  \"activation_fn_kwargs\": {\"k\": ");
        sae__emit_u64(&e, m->k);
        sae__emit_str(&e, "},\n");
    } else {
        sae__emit_str(&e, "  \"activation_fn_str\": \"relu\",\n"
                          "  \"activation_fn_kwargs\": {},\n");
    }
    sae__emit_str(&e, "  \"finetuning_scaling_factor\": false,\n"
                      "  \"reshape_activations\": \"none\",\n"
                      "  \"model_name\": \"\",\n"
                      "  \"hook_name\": \"\",\n"
                      "  \"hook_layer\": 0,\n"
                      "  \"hook_head_index\": null,\n"
                      "  \"context_size\": null,\n"
                      "  \"prepend_bos\": true,\n"
                      "  \"dataset_path\": \"\",\n"
                      "  \"dataset_trust_remote_code\": false,\n"
                      "  \"sae_lens_training_version\": null,\n"
                      "  \"neuronpedia_id\": null,\n"
                      "  \"model_from_pretrained_kwargs\": {},\n"
                      /* SAELens 6's layout: a "metadata" with a version of at
                       * least 6.0.0 is read natively (SAEMetadata keeps every
                       * key, libsae's too); without one SAELens 6 converts the
                       * configuration as a pre-6.0 one and rebuilds "metadata"
                       * from the LLM keys above, dropping the producer's */
                      "  \"metadata\": {\n"
                      "    \"sae_lens_version\": \"6.0.0\",\n"
                      "    \"sae_lens_training_version\": null,\n"
                      "    \"model_name\": \"\",\n"
                      "    \"hook_name\": \"\",\n"
                      "    \"hook_head_index\": null,\n"
                      "    \"context_size\": null,\n"
                      "    \"prepend_bos\": true,\n"
                      "    \"dataset_path\": \"\",\n"
                      "    \"model_from_pretrained_kwargs\": {},\n"
                      "    \"producer\": \"libsae\",\n"
                      "    \"libsae_version\": ");
    sae__emit_json_string(&e, sae_version_string());
    sae__emit_str(&e, "\n  }\n}\n");
    return e.rc;
}

/* ---- checking one ----------------------------------------------------------------- */

/* Key `key` is absent or the string `value`. */
static int absent_or_string(const sae_json_doc *doc, const char *key, const char *value)
{
    size_t v = sae__json_member(doc, 0, key);
    if (v == SIZE_MAX || sae__json_is_string(&doc->nodes[v], value))
        return SAE_OK;
    return sae__fail(SAE_E_FORMAT, "key \"%s\": not \"%s\"", key, value);
}

/* Key `key` of object obj is absent (*out untouched) or a whole number >= 1. */
static int positive_whole(const sae_json_doc *doc, size_t obj, const char *key, uint64_t *out)
{
    size_t v = sae__json_member(doc, obj, key);
    if (v == SIZE_MAX)
        return SAE_OK;
    if (!sae__json_u64(&doc->nodes[v], out) || *out == 0)
        return sae__fail(SAE_E_FORMAT, "key \"%s\": not a whole number >= 1", key);
    return SAE_OK;
}

/* A JSON number that is a whole number >= 1 written as an integer or, as
 * Python's json.dump writes a float, with a fraction of zeros ("32.0"). */
static bool whole_number(const sae_json *node, uint64_t *out)
{
    if (sae__json_u64(node, out))
        return *out > 0;
    if (node->type != SAE_JSON_NUMBER)
        return false;
    size_t dot = 0;
    while (dot < node->len && node->str[dot] != '.')
        dot++;
    if (dot == 0 || dot + 1 >= node->len)
        return false;
    for (size_t i = dot + 1; i < node->len; i++)
        if (node->str[i] != '0')
            return false;
    uint64_t v = 0;
    for (size_t i = 0; i < dot; i++) {
        if (node->str[i] < '0' || node->str[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(node->str[i] - '0');
    }
    *out = v;
    return v > 0;
}

/* Matryoshka's "matryoshka_widths": absent or an array of at most
 * SAE_MAX_LEVELS whole numbers (checked against d_sae when the model is made). */
static int config_widths(const sae_json_doc *doc, sae_saelens_config *cfg)
{
    size_t v = sae__json_member(doc, 0, "matryoshka_widths");
    if (v == SIZE_MAX)
        return SAE_OK;
    const sae_json *a = &doc->nodes[v];
    if (a->type != SAE_JSON_ARRAY || a->len > SAE_MAX_LEVELS)
        return sae__fail(SAE_E_FORMAT, "key \"matryoshka_widths\": not an array of at most %d "
                         "whole numbers", SAE_MAX_LEVELS);
    size_t e = v + 1;
    for (size_t i = 0; i < a->len; i++, e = doc->nodes[e].next) {
        uint64_t w;
        if (!whole_number(&doc->nodes[e], &w) || w > SIZE_MAX)
            return sae__fail(SAE_E_FORMAT, "key \"matryoshka_widths\": element %zu is not a "
                             "whole number >= 1", i);
        cfg->widths[i] = (size_t)w;
    }
    cfg->n_widths = a->len;
    return SAE_OK;
}

/* The k of a TopK-family cfg.json: "k" (SAELens 6; BatchTopK's training
 * configuration, as_float, writes it as a float, e.g. 32.0; TopK's is an
 * integer) and/or "activation_fn_kwargs": {"k": ...} (before 6.0); at least
 * one, all equal and nonzero. */
static int config_k(const sae_json_doc *doc, bool as_float, uint64_t *k)
{
    uint64_t top = 0, kw = 0;
    int rc = SAE_OK;
    size_t kv = sae__json_member(doc, 0, "k");
    if (kv != SIZE_MAX && !(as_float ? whole_number(&doc->nodes[kv], &top)
                                     : sae__json_u64(&doc->nodes[kv], &top) && top > 0))
        rc = sae__fail(SAE_E_FORMAT, "key \"k\": not a whole number >= 1");
    if (rc != SAE_OK)
        return rc;
    size_t v = sae__json_member(doc, 0, "activation_fn_kwargs");
    if (v != SIZE_MAX && doc->nodes[v].type != SAE_JSON_OBJECT)
        return sae__fail(SAE_E_FORMAT, "key \"activation_fn_kwargs\": not an object");
    if (v != SIZE_MAX && (rc = positive_whole(doc, v, "k", &kw)) != SAE_OK)
        return sae__fail_context(rc, "key \"activation_fn_kwargs\"");
    if (top == 0 && kw == 0)
        return sae__fail(SAE_E_FORMAT, "a topk SAE without \"k\"");
    if (top && kw && top != kw)
        return sae__fail(SAE_E_FORMAT,
                         "key \"k\" (%llu) and \"activation_fn_kwargs\": {\"k\"} (%llu) differ",
                         (unsigned long long)top, (unsigned long long)kw);
    *k = top ? top : kw;
    return SAE_OK;
}

/* Check a SAELens cfg.json (text[0..len)): the SAE it describes must be one
 * libsae computes the same way. */
static int check_config(const char *text, size_t len, sae_saelens_config *cfg)
{
    const sae_json_limits limits = {.max_depth = 64, .max_nodes = (size_t)1 << 16};
    sae_json_doc doc;
    int rc = sae__json_parse(text, len, &limits, &doc);
    if (rc != SAE_OK)
        return rc;
    if (doc.nodes[0].type != SAE_JSON_OBJECT) {
        rc = sae__fail(SAE_E_FORMAT, "not a JSON object");
        goto cleanup;
    }
    size_t v = sae__json_member(&doc, 0, "architecture");
    cfg->arch = SAE_ARCH_RELU; /* SAELens's default */
    cfg->kind = SAE_KIND_AUTOENCODER;
    if (v != SIZE_MAX) {
        const sae_json *a = &doc.nodes[v];
        if (a->type != SAE_JSON_STRING) {
            rc = sae__fail(SAE_E_FORMAT, "key \"architecture\": not a string");
            goto cleanup;
        }
        cfg->arch = sae__saelens_by_name(a->str, a->len, &cfg->kind);
        if (cfg->arch < 0) {
            rc = sae__fail(SAE_E_FORMAT, "key \"architecture\": \"%s\" is not a family libsae "
                           "computes (standard, gated, topk, jumprelu, batchtopk, "
                           "matryoshka_batchtopk, transcoder, skip_transcoder, jumprelu_transcoder, "
                           "jumprelu_skip_transcoder, topk_transcoder, topk_skip_transcoder)",
                           a->str);
            goto cleanup;
        }
    }
    const bool transcoder = cfg->kind != SAE_KIND_AUTOENCODER;
    /* the activation: TopK's own, or ReLU (inside the jump for JumpReLU; the
     * BatchTopK training configurations, 6.x only, have none) */
    const bool topk_family = sae__has_k(cfg->arch);
    const char *activation = cfg->arch == SAE_ARCH_TOPK ? "topk" : "relu";
    if (cfg->arch != SAE_ARCH_BATCHTOPK && cfg->arch != SAE_ARCH_MATRYOSHKA &&
        ((rc = absent_or_string(&doc, "activation_fn", activation)) != SAE_OK ||
         (rc = absent_or_string(&doc, "activation_fn_str", activation)) != SAE_OK))
        goto cleanup;
    if (topk_family && (rc = config_k(&doc, cfg->arch != SAE_ARCH_TOPK, &cfg->k)) != SAE_OK)
        goto cleanup;
    if (cfg->arch == SAE_ARCH_MATRYOSHKA && (rc = config_widths(&doc, cfg)) != SAE_OK)
        goto cleanup;
    /* SAELens's TopK family may rescale by the decoder norms: the load folds
     * them into the weights (as SAELens's own _fold_norm_topk) */
    v = sae__json_member(&doc, 0, "rescale_acts_by_decoder_norm");
    cfg->rescale = v != SIZE_MAX && doc.nodes[v].type == SAE_JSON_TRUE;
    if (v != SIZE_MAX && doc.nodes[v].type != SAE_JSON_FALSE &&
        !(topk_family && !transcoder && cfg->rescale)) {
        rc = sae__fail(SAE_E_FORMAT, "key \"rescale_acts_by_decoder_norm\": not %s",
                       topk_family && !transcoder ? "true or false" : "false");
        goto cleanup;
    }
    /* SAELens's transcoders never subtract b_dec (it is d_out wide) whatever
     * the key says (later versions refuse true); SAEs must */
    v = sae__json_member(&doc, 0, "apply_b_dec_to_input");
    if (v != SIZE_MAX && !transcoder && doc.nodes[v].type != SAE_JSON_TRUE) {
        rc = sae__fail(SAE_E_FORMAT, "key \"apply_b_dec_to_input\": not true");
        goto cleanup;
    }
    if (v != SIZE_MAX && transcoder && doc.nodes[v].type != SAE_JSON_TRUE &&
        doc.nodes[v].type != SAE_JSON_FALSE) {
        rc = sae__fail(SAE_E_FORMAT, "key \"apply_b_dec_to_input\": not true or false");
        goto cleanup;
    }
    if (transcoder && (rc = positive_whole(&doc, 0, "d_out", &cfg->d_out)) != SAE_OK)
        goto cleanup;
    v = sae__json_member(&doc, 0, "normalize_activations");
    if (v != SIZE_MAX && doc.nodes[v].type != SAE_JSON_NULL &&
        doc.nodes[v].type != SAE_JSON_FALSE && !sae__json_is_string(&doc.nodes[v], "none")) {
        rc = sae__fail(SAE_E_FORMAT, "key \"normalize_activations\": not null, false or \"none\"");
        goto cleanup;
    }
    if ((rc = positive_whole(&doc, 0, "d_in", &cfg->d_in)) != SAE_OK ||
        (rc = positive_whole(&doc, 0, "d_sae", &cfg->d_sae)) != SAE_OK)
        goto cleanup;
    rc = SAE_OK;
cleanup:
    sae__json_free(&doc);
    return rc;
}

int sae__config_read(const char *dir, sae_saelens_config *cfg)
{
    char *path = sae__path_join(dir, SAE_CONFIG_FILE);
    if (!path)
        return sae__fail(SAE_E_NOMEM, "out of memory for a path");
    sae_file_source fs;
    bool missing;
    char *text = NULL;
    int rc = sae__file_source_open(&fs, path, &missing);
    if (rc != SAE_OK) {
        if (missing)
            rc = SAE_OK; /* no cfg.json: cfg->arch stays -1 */
        goto cleanup;
    }
    if (fs.src.size == 0 || fs.src.size > CONFIG_MAX_BYTES)
        rc = sae__fail(SAE_E_FORMAT, "%s: %llu bytes, not 1 to %u", path,
                       (unsigned long long)fs.src.size, CONFIG_MAX_BYTES);
    else if (!(text = sae__alloc((size_t)fs.src.size)))
        rc = sae__fail(SAE_E_NOMEM, "%s: out of memory for its text", path);
    else if ((rc = fs.src.read(fs.src.ctx, 0, text, (size_t)fs.src.size)) != SAE_OK)
        sae__fail_context(rc, "%s", path);
    else if ((rc = check_config(text, (size_t)fs.src.size, cfg)) != SAE_OK)
        sae__fail_context(rc, "%s", path);
    sae__free(text);
    sae__file_source_close(&fs);
cleanup:
    sae__free(path);
    return rc;
}
