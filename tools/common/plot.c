#include "plot.h"

#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tool_gnuplot(const char *script_path)
{
    char *copy = strdup(script_path);
    if (!copy)
        return TOOL_GNUPLOT_FAILED;
    char *slash = strrchr(copy, '/');
    const char *dir = ".", *name = copy;
    if (slash) {
        *slash = '\0';
        dir = slash == copy ? "/" : copy;
        name = slash + 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(dir) == 0)
            execlp("gnuplot", "gnuplot", name, (char *)NULL);
        _exit(errno == ENOENT ? 127 : 126);
    }
    free(copy);
    if (pid < 0)
        return TOOL_GNUPLOT_FAILED;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return TOOL_GNUPLOT_FAILED;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return TOOL_GNUPLOT_MISSING;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? TOOL_GNUPLOT_OK : TOOL_GNUPLOT_FAILED;
}

int tool_plot_report(int prc, const char *opt, const char *png, const char *what, const char *csv)
{
    if (prc == TOOL_GNUPLOT_OK) {
        printf("%s: %s\n", what, png);
        return 0;
    }
    if (prc == TOOL_GNUPLOT_MISSING) {
        fprintf(stderr, "%s: %s: gnuplot not found (Debian: gnuplot-nox)%s%s\n", tool_program(), opt,
                csv ? "; the CSV is in " : "", csv ? csv : "");
        return 0;
    }
    fprintf(stderr, "%s: %s: drawing '%s' failed\n", tool_program(), opt, png);
    return 1;
}

void tool_gp_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

int tool_plot_tiles(const char *png_path, const float *rows, size_t n, size_t h, size_t w,
                    const char *title)
{
    size_t len = strlen(png_path);
    if (n == 0 || len < 4 || strcmp(png_path + len - 4, ".png") != 0)
        return -1;
    char *script = malloc(len + 1);
    if (!script)
        return -1;
    memcpy(script, png_path, len - 4);
    strcpy(script + len - 4, ".gp");
    FILE *f = fopen(script, "w");
    if (!f) {
        free(script);
        return -1;
    }
    const char *base = strrchr(png_path, '/');
    base = base ? base + 1 : png_path;

    /* A grid of cols x grid_rows tiles with 1-pixel gaps. Tiles take values in
     * [-1, 1]; gaps get GAP, which the palette draws gray. */
    size_t cols = (size_t)ceil(sqrt((double)n));
    size_t grid_rows = (n + cols - 1) / cols;
    size_t W = cols * (w + 1) + 1, H = grid_rows * (h + 1) + 1;
    size_t scale = 640 / (W > H ? W : H);
    if (scale < 1)
        scale = 1;
    fprintf(f, "# %zu tiles of %zux%zu, each scaled to its largest |value|.\n", n, h, w);
    fprintf(f, "$tiles << EOD\n");
    for (size_t Y = 0; Y < H; Y++) {
        for (size_t X = 0; X < W; X++) {
            size_t ty = Y / (h + 1), tx = X / (w + 1), k = ty * cols + tx;
            size_t y = Y % (h + 1), x = X % (w + 1);
            if (y == 0 || x == 0 || k >= n) {
                fputs(X ? " 1.1" : "1.1", f);
                continue;
            }
            const float *tile = rows + k * h * w;
            float mx = 0.0f;
            for (size_t i = 0; i < h * w; i++)
                mx = fmaxf(mx, fabsf(tile[i]));
            float v = mx > 0.0f ? tile[(y - 1) * w + (x - 1)] / mx : 0.0f;
            fprintf(f, X ? " %.3f" : "%.3f", v);
        }
        fputc('\n', f);
    }
    fprintf(f, "EOD\n");
    fprintf(f, "set terminal pngcairo size %zu,%zu font 'sans,11'\n", W * scale + 40,
            H * scale + 70);
    fprintf(f, "set output ");
    tool_gp_quote(f, base);
    fprintf(f, "\nset title ");
    tool_gp_quote(f, title);
    fprintf(f, " noenhanced\n"
               "unset key; unset tics; unset border; unset colorbox\n"
               "set size ratio -1\n"
               "set margins 1,1,1,3\n"
               "set yrange [*:*] reverse\n"
               "# -1 blue, 0 white, 1 red; 1.1 marks the gaps between tiles (gray)\n"
               "set palette defined (-1 '#2166ac', 0 'white', 1 '#b2182b', 1.001 '#606060', 1.1 '#606060')\n"
               "set cbrange [-1:1.1]\n"
               "plot $tiles matrix with image\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(script);
        return -1;
    }
    int rc = tool_gnuplot(script);
    free(script);
    return rc;
}
