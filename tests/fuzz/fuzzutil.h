/*
 * Helpers the corpus-driven fuzz programs share: a fixed-seed generator,
 * little-endian words, and the command line (N rounds, or --write-corpus
 * DIR [N] to seed a libFuzzer run).
 */
#ifndef SV_FUZZUTIL_H
#define SV_FUZZUTIL_H

#include <stddef.h>
#include <stdint.h>

/* xorshift64, the same sequence on every run. */
uint64_t fu_next(void);
uint32_t fu_below(uint32_t n); /* 0..n-1; 0 when n is 0 */

uint32_t fu_rd32(const uint8_t *p);
uint64_t fu_rd64(const uint8_t *p);
void fu_wr32(uint8_t *p, uint32_t v);

/* Mutations shared by the harnesses: insert 1..max_n random bytes at pos
 * (if they fit in cap), delete 1..max_n bytes at pos (if there are). */
void fu_insert_random(uint8_t *b, size_t *len, size_t cap, size_t pos, uint32_t max_n);
void fu_delete_chunk(uint8_t *b, size_t *len, size_t pos, uint32_t max_n);

/* argv: [N] or --write-corpus DIR [N] (the directory is created). Exits 1
 * with a message when the directory cannot be made. */
void fu_args(const char *prog, int argc, char **argv, long *rounds, const char **corpus);
/* Write input k to DIR/seed-NNNN; exits 1 on failure. */
void fu_write_input(const char *prog, const char *dir, size_t k, const uint8_t *in, size_t len);

#endif
