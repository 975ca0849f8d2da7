/*
 * Real nats-server processes for the cluster tests: n servers with
 * JetStream on loopback, clustered when n > 1, each in its own directory
 * under a temporary root, on ports the kernel handed out free. Started,
 * SIGKILLed, SIGSTOPped and continued by the tests; everything is killed
 * and removed at the end (and at exit, should a test fail half-way).
 */
#ifndef SV_NATSPROC_H
#define SV_NATSPROC_H

#include <sys/types.h>

#define NP_MAX 5

typedef struct np_cluster {
    int n;
    char root[128];
    int client_port[NP_MAX], route_port[NP_MAX];
    pid_t pid[NP_MAX];
    char urls[NP_MAX * 32];     /* nats://127.0.0.1:p1,... */
} np_cluster;

/* Start n servers and wait (up to 30 s) until JetStream answers on every
 * one; 0 on success. */
int np_start(np_cluster *c, int n);
/* Start server i again (same directory, same ports); 0 on success. */
int np_restart(np_cluster *c, int i);
void np_kill(np_cluster *c, int i);   /* SIGKILL and reap */
void np_pause(np_cluster *c, int i);  /* SIGSTOP */
void np_resume(np_cluster *c, int i); /* SIGCONT */
/* The index of the server named `name` ("n0".."n4"), -1 when none. */
int np_index(const np_cluster *c, const char *name);
void np_stop_all(np_cluster *c);      /* kill everything, remove the root */

#endif
