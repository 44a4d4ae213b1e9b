/*
 * Graphs through gnuplot (Debian: gnuplot-nox, whose pngcairo terminal draws
 * anti-aliased PNGs). The programs write a gnuplot script next to the images
 * it draws and run it, so a graph can be restyled and redrawn by hand with
 * `cd DIR && gnuplot SCRIPT.gp`.
 */
#ifndef TOOL_PLOT_H
#define TOOL_PLOT_H

#include <stddef.h>
#include <stdio.h>

#define TOOL_GNUPLOT_OK 0
#define TOOL_GNUPLOT_MISSING 1 /* no gnuplot on PATH */
#define TOOL_GNUPLOT_FAILED 2 /* gnuplot ran and failed (it printed why) */

/* Run `gnuplot NAME` in the directory of script_path (so the script names its
 * data and images relative to itself). */
int tool_gnuplot(const char *script_path);

/* Report a drawing's outcome (prc: TOOL_GNUPLOT_* or -1): on success
 * "<what>: <png>" on stdout; without gnuplot "<program>: <opt>: gnuplot not
 * found (Debian: gnuplot-nox)", with "; the CSV is in <csv>" when csv is not
 * NULL; on failure "<program>: <opt>: drawing '<png>' failed". Returns 0, or
 * 1 when the drawing failed (a missing gnuplot is not a failure). */
int tool_plot_report(int prc, const char *opt, const char *png, const char *what, const char *csv);

/* Write s as a gnuplot single-quoted string ('' escapes a quote). */
void tool_gp_quote(FILE *f, const char *s);

/* Draw n rows of `rows` (each h*w floats, row-major, e.g. decoder directions
 * of 28x28 images) as a grid of h x w tiles into the PNG png_path, each tile
 * scaled to its own largest magnitude on a blue-white-red scale (white is 0).
 * Writes the script with the tile data inline to png_path with ".gp" in place
 * of ".png", then runs it. Returns TOOL_GNUPLOT_* or -1 if the script could not
 * be written. */
int tool_plot_tiles(const char *png_path, const float *rows, size_t n, size_t h, size_t w,
                    const char *title);

#endif
