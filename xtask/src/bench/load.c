/* Load generators for `cargo xtask bench`: native clients and servers, so the workload and not
 * an interpreter is what gets measured. Built with gcc into a temporary directory by the bench.
 * Each mode prints one "ready" line when it is listening or holding, and its results as
 * "key value" lines on stdout.
 *
 *   serve PORT...                      accept and close on each port, until killed
 *   storm IP PORT SECS                 short connections (connect, read EOF, close) for SECS
 *   rststorm IP PORT SECS RATE         short connections closed with RST (SO_LINGER 0, right
 *                                      after connect) for SECS, paced to RATE connects/s (0:
 *                                      as fast as it can); prints connects, failed, seconds
 *   sink PORT                          accept one stream, read to EOF, print bytes
 *   blast IP PORT SECS                 write one TCP stream for SECS, print bytes and seconds
 *   udpflood IP PORT SECS              connected UDP, sendmmsg batches of a VXLAN-encapsulated
 *                                      TCP SYN for SECS, print packets sent
 *   udpbad IP PORT SECS                the same payload from a raw socket with a wrong UDP
 *                                      checksum (the receiver drops it: UDP_CSUM)
 *   synhold IP PORT NPORTS N           N non-blocking connects to PORT..PORT+NPORTS-1, spread
 *                                      over processes as the file limit needs; "ready" when
 *                                      all are in flight; exit (closing all) on stdin EOF
 *   firstsyn IP PORT N GAP_US TIMEOUT_S
 *                                      N non-blocking connects GAP_US apart; per connect print
 *                                      "conn SPORT T0_NS DONE_NS" (CLOCK_REALTIME; DONE_NS 0 if
 *                                      it did not complete)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint64_t now_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct sockaddr_in addr_of(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

static int listener(int port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) die("socket");
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = addr_of("0.0.0.0", port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(s, 4096) < 0) die("listen");
    return s;
}

static void ready(void) {
    printf("ready\n");
    fflush(stdout);
}

/* What every storm client prints at its end, for the bench to parse. */
static int storm_report(uint64_t connects, uint64_t failed, uint64_t elapsed_ns) {
    printf("connects %llu\nfailed %llu\nseconds %.6f\n", (unsigned long long)connects,
           (unsigned long long)failed, (double)elapsed_ns / 1e9);
    return 0;
}

__attribute__((noreturn)) static void serve(int argc, char **argv) {
    int n = argc;
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    for (int i = 0; i < n; i++) {
        p[i].fd = listener(atoi(argv[i]));
        p[i].events = POLLIN;
    }
    ready();
    for (;;) {
        if (poll(p, (nfds_t)n, -1) < 0 && errno != EINTR) die("poll");
        for (int i = 0; i < n; i++) {
            if (!(p[i].revents & POLLIN)) continue;
            for (;;) {
                int c = accept4(p[i].fd, NULL, NULL, 0);
                if (c < 0) break;
                close(c);
            }
        }
    }
}

static int storm(const char *ip, int port, double secs) {
    struct sockaddr_in a = addr_of(ip, port);
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t end = start + (uint64_t)(secs * 1e9);
    uint64_t n = 0, failed = 0, now = start;
    char buf[64];
    ready();
    while (now < end) {
        for (int k = 0; k < 32; k++) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0) die("socket");
            if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
                /* The server closes first: its side keeps TIME_WAIT, our port is free again. */
                while (read(s, buf, sizeof buf) > 0) {
                }
                n++;
            } else {
                failed++;
            }
            close(s);
        }
        now = now_ns(CLOCK_MONOTONIC);
    }
    return storm_report(n, failed, now - start);
}

/* The RST client: connect, then close at once with SO_LINGER {1, 0}, which aborts the
 * connection with a RST instead of a FIN (no TIME_WAIT on either side). Connect number i is
 * started no earlier than start + i / RATE (an absolute schedule: a late connect is not made up
 * for by sleeping less later, and a client slower than RATE simply runs flat out). */
static int rststorm(const char *ip, int port, double secs, double rate) {
    struct sockaddr_in a = addr_of(ip, port);
    struct linger lg = {1, 0};
    /* The default 50 us timer slack is longer than a 30 k/s interval (33 us). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    uint64_t interval = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t end = start + (uint64_t)(secs * 1e9);
    uint64_t n = 0, failed = 0, now = start, next = start;
    ready();
    while (now < end) {
        if (interval) {
            if (now < next) {
                struct timespec ts = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
                }
            }
            next += interval;
        }
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) die("socket");
        if (setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0) die("SO_LINGER");
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0)
            n++;
        else
            failed++;
        close(s);
        now = now_ns(CLOCK_MONOTONIC);
    }
    return storm_report(n, failed, now - start);
}

static int sink(int port) {
    int l = listener(port);
    int fl = fcntl(l, F_GETFL);
    fcntl(l, F_SETFL, fl & ~O_NONBLOCK);
    ready();
    int c = accept(l, NULL, NULL);
    if (c < 0) die("accept");
    static char buf[1 << 18];
    unsigned long long total = 0;
    ssize_t r;
    while ((r = read(c, buf, sizeof buf)) > 0) total += (unsigned long long)r;
    printf("bytes %llu\n", total);
    return 0;
}

static int blast(const char *ip, int port, double secs) {
    struct sockaddr_in a = addr_of(ip, port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    static char buf[1 << 17];
    memset(buf, 'x', sizeof buf);
    unsigned long long total = 0;
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t end = start + (uint64_t)(secs * 1e9), now = start;
    ready();
    while (now < end) {
        ssize_t w = write(s, buf, sizeof buf);
        if (w < 0) die("write");
        total += (unsigned long long)w;
        now = now_ns(CLOCK_MONOTONIC);
    }
    close(s);
    printf("bytes %llu\nseconds %.6f\n", total, (double)(now - start) / 1e9);
    return 0;
}

/* VXLAN header, inner Ethernet, IPv4 and a TCP SYN 10.99.0.1:40000 -> 10.99.0.2:8080: the
 * deepest path of netlat's packet decoder. */
static size_t vxlan_syn(unsigned char *p) {
    static const unsigned char pkt[] = {
        /* VXLAN: flags I, VNI 4096 */
        0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0,
        /* Ethernet */
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
        /* IPv4, TCP, 10.99.0.1 -> 10.99.0.2 */
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2,
        /* TCP 40000 -> 8080, SYN */
        0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0};
    memcpy(p, pkt, sizeof pkt);
    return sizeof pkt;
}

static int udpflood(const char *ip, int port, double secs, int bad_csum) {
    struct sockaddr_in a = addr_of(ip, port);
    int s = bad_csum ? socket(AF_INET, SOCK_RAW, IPPROTO_UDP) : socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    enum { BATCH = 64 };
    static unsigned char payload[160];
    size_t len;
    if (bad_csum) {
        /* Our own UDP header: the kernel adds only the IP header and never fixes the sum. */
        len = 8 + vxlan_syn(payload + 8);
        uint16_t h[4] = {htons(40000), htons((uint16_t)port), htons((uint16_t)len), htons(0x1234)};
        memcpy(payload, h, sizeof h);
    } else {
        len = vxlan_syn(payload);
    }
    struct iovec iov = {.iov_base = payload, .iov_len = len};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long sent = 0, errors = 0;
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t end = start + (uint64_t)(secs * 1e9), now = start;
    ready();
    while (now < end) {
        int r = sendmmsg(s, msgs, BATCH, 0);
        if (r > 0)
            sent += (unsigned long long)r;
        else
            errors++; /* e.g. ECONNREFUSED from an ICMP port unreachable: keep going */
        now = now_ns(CLOCK_MONOTONIC);
    }
    printf("packets %llu\nerrors %llu\nseconds %.6f\n", sent, errors,
           (double)(now - start) / 1e9);
    return 0;
}

/* Raise the soft file limit as far as the hard limit allows; returns the soft limit. Raising
 * the hard limit needs CAP_SYS_RESOURCE, which the bench may not have. */
static rlim_t raise_nofile(rlim_t want) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) < 0) die("getrlimit");
    r.rlim_cur = want < r.rlim_max ? want : r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) < 0) die("setrlimit(RLIMIT_NOFILE)");
    return r.rlim_cur;
}

struct held {
    long opened, failed;
};

/* Open connects number `from` .. `to`-1 and keep them. */
static struct held open_connects(const char *ip, int port, int nports, long from, long to) {
    struct held h = {0, 0};
    for (long i = from; i < to; i++) {
        struct sockaddr_in a = addr_of(ip, port + (int)(i % nports));
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s < 0) {
            h.failed++;
            continue;
        }
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
            h.failed++;
            close(s);
            continue;
        }
        h.opened++;
    }
    return h;
}

/* N connects held by as many processes as the file limit needs; each keeps its sockets until
 * stdin (shared) reaches EOF. */
static int synhold(const char *ip, int port, int nports, long n) {
    long per = (long)raise_nofile((rlim_t)n + 64) - 64;
    if (per < 1) {
        fprintf(stderr, "file limit too low\n");
        return 1;
    }
    int report[2];
    if (pipe(report) < 0) die("pipe");
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    int children = 0;
    for (long from = 0; from < n; from += per, children++) {
        long to = from + per < n ? from + per : n;
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            close(report[0]);
            struct held h = open_connects(ip, port, nports, from, to);
            if (write(report[1], &h, sizeof h) != (ssize_t)sizeof h) _exit(1);
            close(report[1]);
            char c;
            while (read(0, &c, 1) > 0) {
            }
            _exit(0);
        }
    }
    close(report[1]);
    struct held total = {0, 0}, h;
    for (int i = 0; i < children; i++) {
        if (read(report[0], &h, sizeof h) != (ssize_t)sizeof h) die("child report");
        total.opened += h.opened;
        total.failed += h.failed;
    }
    printf("opened %ld\nfailed %ld\nprocesses %d\nseconds %.6f\n", total.opened, total.failed,
           children, (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9);
    ready();
    char c;
    while (read(0, &c, 1) > 0) {
    }
    while (wait(NULL) > 0) {
    }
    return 0;
}

static int firstsyn(const char *ip, int port, int n, long gap_us, double timeout_s) {
    if (raise_nofile((rlim_t)n + 64) < (rlim_t)n + 64) {
        fprintf(stderr, "file limit too low for %d connects\n", n);
        return 1;
    }
    struct sockaddr_in a = addr_of(ip, port);
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    uint64_t *t0 = calloc((size_t)n, sizeof *t0), *done = calloc((size_t)n, sizeof *done);
    int *sport = calloc((size_t)n, sizeof *sport);
    ready();
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s < 0) die("socket");
        t0[i] = now_ns(CLOCK_REALTIME);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
            die("connect");
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(s, (struct sockaddr *)&me, &ml);
        sport[i] = ntohs(me.sin_port);
        p[i].fd = s;
        p[i].events = POLLOUT;
        if (gap_us > 0) usleep((useconds_t)gap_us);
    }
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + (uint64_t)(timeout_s * 1e9);
    int left = n;
    while (left > 0 && now_ns(CLOCK_MONOTONIC) < deadline) {
        if (poll(p, (nfds_t)n, 100) < 0 && errno != EINTR) die("poll");
        uint64_t t = now_ns(CLOCK_REALTIME);
        for (int i = 0; i < n; i++) {
            if (p[i].fd >= 0 && (p[i].revents & (POLLOUT | POLLERR | POLLHUP))) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(p[i].fd, SOL_SOCKET, SO_ERROR, &err, &el);
                done[i] = err == 0 ? t : 0;
                close(p[i].fd);
                p[i].fd = -1;
                left--;
            }
        }
    }
    for (int i = 0; i < n; i++)
        printf("conn %d %llu %llu\n", sport[i], (unsigned long long)t0[i],
               (unsigned long long)done[i]);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) goto usage;
    const char *m = argv[1];
    if (!strcmp(m, "serve") && argc >= 3) serve(argc - 2, argv + 2);
    if (!strcmp(m, "storm") && argc == 5) return storm(argv[2], atoi(argv[3]), atof(argv[4]));
    if (!strcmp(m, "rststorm") && argc == 6)
        return rststorm(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]));
    if (!strcmp(m, "sink") && argc == 3) return sink(atoi(argv[2]));
    if (!strcmp(m, "blast") && argc == 5) return blast(argv[2], atoi(argv[3]), atof(argv[4]));
    if (!strcmp(m, "udpflood") && argc == 5)
        return udpflood(argv[2], atoi(argv[3]), atof(argv[4]), 0);
    if (!strcmp(m, "udpbad") && argc == 5)
        return udpflood(argv[2], atoi(argv[3]), atof(argv[4]), 1);
    if (!strcmp(m, "synhold") && argc == 6)
        return synhold(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
    if (!strcmp(m, "firstsyn") && argc == 7)
        return firstsyn(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]), atof(argv[6]));
usage:
    fprintf(stderr, "usage: load serve|storm|rststorm|sink|blast|udpflood|udpbad|synhold|firstsyn ...\n");
    return 2;
}
