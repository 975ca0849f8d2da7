/* nats-server processes for the tests (see natsproc.h). */
#include "natsproc.h"

#include <dirent.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Free ports below the kernel's ephemeral range (32768 up), picked at
 * random and checked by binding: a port from the ephemeral range can be
 * taken by an outgoing connection (or another test's free-port pick) in
 * the time a nats-server needs to start, on a machine running tests in
 * parallel. */
static int free_ports(int *out, int n)
{
    static int seeded;
    if (!seeded++)
        srand((unsigned)getpid() ^ (unsigned)time(NULL));
    for (int i = 0; i < n;) {
        int port = 20000 + rand() % 12000, dup = 0;
        for (int j = 0; j < i; j++)
            dup |= out[j] == port;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons((uint16_t)port)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        int ok = !dup && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            out[i++] = port;
    }
    return 0;
}

static int write_config(const np_cluster *c, int i)
{
    char path[256];
    snprintf(path, sizeof path, "%s/n%d.conf", c->root, i);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "server_name: n%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: \"%s/n%d\" }\n", i,
            c->client_port[i], c->root, i);
    if (c->n > 1) {
        fprintf(f, "cluster {\n  name: svtest\n  listen: 127.0.0.1:%d\n  routes: [\n", c->route_port[i]);
        for (int j = 0; j < c->n; j++)
            if (j != i)
                fprintf(f, "    nats-route://127.0.0.1:%d\n", c->route_port[j]);
        fprintf(f, "  ]\n}\n");
    }
    return fclose(f);
}

static pid_t spawn(const np_cluster *c, int i)
{
    char conf[256], log[256];
    snprintf(conf, sizeof conf, "%s/n%d.conf", c->root, i);
    snprintf(log, sizeof log, "%s/n%d.log", c->root, i);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("nats-server", "nats-server", "-c", conf, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* JetStream answers on server i (its meta group has a leader). */
static int ready(const np_cluster *c, int i, int timeout_ms)
{
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", c->client_port[i]);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        natsConnection *nc = NULL;
        jsCtx *js = NULL;
        jsAccountInfo *ai = NULL;
        int ok = natsConnection_ConnectTo(&nc, url) == NATS_OK && natsConnection_JetStream(&js, nc, NULL) == NATS_OK &&
                 js_GetAccountInfo(&ai, js, NULL, NULL) == NATS_OK;
        jsAccountInfo_Destroy(ai);
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
        if (ok)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
            return 0;
        usleep(100000);
    }
}

static np_cluster *registered;

static void stop_at_exit(void)
{
    if (registered)
        np_stop_all(registered);
}

int np_start(np_cluster *c, int n)
{
    memset(c, 0, sizeof *c);
    if (n < 1 || n > NP_MAX)
        return -1;
    c->n = n;
    snprintf(c->root, sizeof c->root, "/tmp/sv-nats-XXXXXX");
    if (!mkdtemp(c->root))
        return -1;
    int ports[2 * NP_MAX];
    if (free_ports(ports, 2 * n) != 0)
        return -1;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        c->client_port[i] = ports[2 * i];
        c->route_port[i] = ports[2 * i + 1];
        used += (size_t)snprintf(c->urls + used, sizeof c->urls - used, "%snats://127.0.0.1:%d", i ? "," : "",
                                 c->client_port[i]);
    }
    registered = c;
    static int hooked;
    if (!hooked++)
        atexit(stop_at_exit);
    for (int i = 0; i < n; i++)
        if (write_config(c, i) != 0 || (c->pid[i] = spawn(c, i)) <= 0)
            return -1;
    for (int i = 0; i < n; i++)
        if (!ready(c, i, 30000))
            return -1;
    return 0;
}

int np_restart(np_cluster *c, int i)
{
    if (c->pid[i] > 0)
        np_kill(c, i);
    if ((c->pid[i] = spawn(c, i)) <= 0)
        return -1;
    return ready(c, i, 30000) ? 0 : -1;
}

void np_kill(np_cluster *c, int i)
{
    if (c->pid[i] <= 0)
        return;
    kill(c->pid[i], SIGCONT);
    kill(c->pid[i], SIGKILL);
    waitpid(c->pid[i], NULL, 0);
    c->pid[i] = 0;
}

/* Whether every thread of pid is stopped ('T' in /proc/<pid>/task/<tid>/stat). */
static int all_threads_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return 1; /* gone: nothing runs */
    int stopped = 1;
    struct dirent *e;
    while (stopped && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char stat_path[64 + 256 + 8], buf[512];
        snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, e->d_name);
        FILE *f = fopen(stat_path, "r");
        if (!f)
            continue; /* the thread exited */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')');
        stopped = paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
    }
    closedir(dir);
    return stopped;
}

/* kill() only queues SIGSTOP: one thread must be scheduled to take it
 * before the others are told to stop, and on a loaded machine the rest
 * run on meanwhile (a paused server once acknowledged a replicated
 * append after kill() returned). Wait until every thread is stopped. */
void np_pause(np_cluster *c, int i)
{
    if (c->pid[i] <= 0)
        return;
    kill(c->pid[i], SIGSTOP);
    for (int tries = 0; tries < 5000 && !all_threads_stopped(c->pid[i]); tries++)
        usleep(1000);
}

void np_resume(np_cluster *c, int i)
{
    if (c->pid[i] > 0)
        kill(c->pid[i], SIGCONT);
}

int np_index(const np_cluster *c, const char *name)
{
    for (int i = 0; i < c->n; i++) {
        char want[16];
        snprintf(want, sizeof want, "n%d", i);
        if (name && strcmp(name, want) == 0)
            return i;
    }
    return -1;
}

void np_stop_all(np_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        np_kill(c, i);
    if (c->root[0]) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->root);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", c->root);
        c->root[0] = '\0';
    }
    if (registered == c)
        registered = NULL;
}
