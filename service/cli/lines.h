/*
 * Text files for the `slimvec` client: a line at a time, each line
 * bounded (JSON lines of payloads, lines of ids), or a whole small file
 * (a filter given as @FILE). Fuzzed with the JSON by fuzz_clijson.
 */
#ifndef SV_CLI_LINES_H
#define SV_CLI_LINES_H

#include <stddef.h>
#include <stdio.h>

#define SVL_ERR_LEN 512

typedef struct svl_error {
    char message[SVL_ERR_LEN];
} svl_error;

/*
 * Lines of a file, each at most `max` bytes (less its "\n" or "\r\n"),
 * without NUL bytes. A last line without a newline counts; the empty text
 * after a final newline is not a line.
 */
typedef struct svl_lines {
    FILE *f;
    int own;           /* opened by svl_lines_open: closed by svl_lines_close */
    const char *name;  /* named in messages */
    size_t max;
    char *buf;         /* max + 1 bytes: the current line, NUL-terminated */
    size_t len;        /* the current line's length */
    size_t line;       /* the current line's number, 1-based (0 before the first) */
} svl_lines;

/* Opens a regular file (read twice by the client: checked, then sent, so
 * a pipe is refused up front). Returns 0, or -1 with err set. */
int svl_lines_open(svl_lines *r, const char *path, size_t max, svl_error *err);
/* Reads an already open stream (not closed by svl_lines_close). */
int svl_lines_init(svl_lines *r, FILE *f, const char *name, size_t max, svl_error *err);
/* Back to the first line. Returns 0, or -1 with err set. */
int svl_lines_rewind(svl_lines *r, svl_error *err);
/* The next line into r->buf / r->len: 1, 0 at the end, -1 with err set
 * (a read error, a line over max, a NUL byte). */
int svl_lines_next(svl_lines *r, svl_error *err);
void svl_lines_close(svl_lines *r);

/*
 * A whole file of at most `max` bytes into a new NUL-terminated buffer
 * (*out, free()), for a filter given as @FILE. Returns 0, or -1 with err
 * set (cannot open or read, over max, a NUL byte).
 */
int svl_read_text(const char *path, size_t max, char **out, size_t *len, svl_error *err);

#endif
