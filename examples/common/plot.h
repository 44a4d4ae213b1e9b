/*
 * Graphs through gnuplot (Debian: gnuplot-nox, whose pngcairo terminal draws
 * anti-aliased PNGs). The programs write a gnuplot script next to the images
 * it draws and run it, so a graph can be restyled and redrawn by hand with
 * `cd DIR && gnuplot SCRIPT.gp`.
 */
#ifndef EX_PLOT_H
#define EX_PLOT_H

#include <stddef.h>
#include <stdio.h>

#define EX_GNUPLOT_OK 0
#define EX_GNUPLOT_MISSING 1 /* no gnuplot on PATH */
#define EX_GNUPLOT_FAILED 2  /* gnuplot ran and failed (it printed why) */

/* Run `gnuplot NAME` in the directory of script_path (so the script names its
 * data and images relative to itself). */
int ex_gnuplot(const char *script_path);

/* Write s as a gnuplot single-quoted string ('' escapes a quote). */
void ex_gp_quote(FILE *f, const char *s);

/* Draw n rows of `rows` (each h*w floats, row-major, e.g. decoder directions
 * of 28x28 images) as a grid of h x w tiles into the PNG png_path, each tile
 * scaled to its own largest magnitude on a blue-white-red scale (white is 0).
 * Writes the script with the tile data inline to png_path with ".gp" in place
 * of ".png", then runs it. Returns EX_GNUPLOT_* or -1 if the script could not
 * be written. */
int ex_plot_tiles(const char *png_path, const float *rows, size_t n, size_t h, size_t w,
                  const char *title);

#endif
