/* nlvm: the guest's TCP client and server for the VM scenarios (built with gcc -static).
 *
 *   nlvm serve ADDR PORT MODE ID
 *     Listens on ADDR:PORT, prints "ready" and serves one connection at a time until killed.
 *     MODE accept: close at once (no data).
 *          close:  send the one-byte ID, read one byte, close gracefully (FIN).
 *          rst:    send the ID, read one byte, abort with SO_LINGER{1,0} (RST).
 *          hold:   send the ID and keep the connection open.
 *          noaccept: listen with backlog 1 and never accept (the accept queue fills with two
 *                  connections; later SYNs are refused: ListenOverflows).
 *
 *   nlvm connect ADDR PORT [-s SPORT] [-t TIMEOUT_S] [-m MODE] [-n COUNT] [-g GAP_S] [-i FIRST]
 *     Connects COUNT times (default 1), GAP_S seconds apart (default 0.5), from SPORT (or the
 *     port the first connect got) with SO_REUSEADDR, so every connect reuses the same source
 *     port; each gives up after TIMEOUT_S (default 10).
 *     MODE plain: close right after the handshake (default).
 *          talk:  read the server's ID byte, send one byte, wait for the server to close, close.
 *          abort: read the ID byte, then abort with SO_LINGER{1,0} (RST).
 *          hold:  read the ID byte and keep the connection open until killed (COUNT is 1).
 *     Prints one line per connect, numbered from FIRST (default 0):
 *       i=<n> connect_s=<seconds>|fail sport=<port> backend=<id>|- err=<errno name>|0
 *
 *   nlvm txcsum DEV on|off
 *     Turns tx checksum offload of DEV on or off (ethtool -K DEV tx on|off, without ethtool).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "nlvm: %s: %s\n", what, strerror(errno));
  exit(2);
}

static struct sockaddr_in addr(const char *ip, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    fprintf(stderr, "nlvm: bad address %s\n", ip);
    exit(2);
  }
  return a;
}

static void abort_close(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

/* Waits up to timeout_ms for fd to become readable; returns read()'s result, or -2 on timeout. */
static int read_byte(int fd, char *c, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r = poll(&p, 1, timeout_ms);
  if (r <= 0) return -2;
  return (int)read(fd, c, 1);
}

static int serve(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: nlvm serve ADDR PORT accept|close|rst|hold|noaccept ID\n");
    return 2;
  }
  struct sockaddr_in a = addr(argv[2], atoi(argv[3]));
  const char *mode = argv[4];
  char id = argv[5][0];
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  if (s < 0) die("socket");
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, (void *)&a, sizeof a) < 0) die("bind");
  int noaccept = !strcmp(mode, "noaccept");
  if (listen(s, noaccept ? 1 : 128) < 0) die("listen");
  printf("ready\n");
  fflush(stdout);
  if (noaccept)
    for (;;) pause();
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    if (!strcmp(mode, "accept")) {
      close(c);
      continue;
    }
    if (write(c, &id, 1) != 1) {
      close(c);
      continue;
    }
    if (!strcmp(mode, "hold")) continue; /* the fd stays open until the process dies */
    char b;
    read_byte(c, &b, 5000);
    if (!strcmp(mode, "rst"))
      abort_close(c);
    else
      close(c);
  }
}

static const char *errname(int e) {
  switch (e) {
  case 0: return "0";
  case ETIMEDOUT: return "ETIMEDOUT";
  case ECONNREFUSED: return "ECONNREFUSED";
  case ECONNRESET: return "ECONNRESET";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case ENETUNREACH: return "ENETUNREACH";
  case EADDRINUSE: return "EADDRINUSE";
  case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
  default: return strerror(e);
  }
}

static int connect_one(struct sockaddr_in *dst, int *sport_io, double timeout_s, const char *mode,
                       int i) {
  int sport = *sport_io;
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1, err = 0;
  if (s < 0) die("socket");
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (sport) {
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(sport)};
    if (bind(s, (void *)&src, sizeof src) < 0) {
      printf("i=%d connect_s=fail sport=%d backend=- err=%s\n", i, sport, errname(errno));
      fflush(stdout);
      close(s);
      return 1;
    }
  }
  double t0 = now(), t1 = -1;
  if (connect(s, (void *)dst, sizeof *dst) == 0) {
    t1 = now();
  } else if (errno != EINPROGRESS) {
    err = errno;
  } else {
    struct pollfd p = {.fd = s, .events = POLLOUT};
    int r = poll(&p, 1, (int)(timeout_s * 1000));
    if (r == 1) {
      socklen_t l = sizeof err;
      getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
      if (!err) t1 = now();
    } else {
      err = ETIMEDOUT;
    }
  }
  struct sockaddr_in me;
  socklen_t ml = sizeof me;
  getsockname(s, (void *)&me, &ml);
  int port = ntohs(me.sin_port);
  *sport_io = port;
  char id = '-';
  if (t1 >= 0) {
    int fl = fcntl(s, F_GETFL);
    fcntl(s, F_SETFL, fl & ~O_NONBLOCK);
    if (!strcmp(mode, "talk") || !strcmp(mode, "abort") || !strcmp(mode, "hold")) {
      char b;
      if (read_byte(s, &b, 5000) == 1) id = b;
    }
    if (!strcmp(mode, "talk")) {
      char b = 'x';
      if (write(s, &b, 1) == 1) {
        while (read_byte(s, &b, 5000) > 0) {
        }
      }
    }
  }
  if (t1 >= 0)
    printf("i=%d connect_s=%.4f sport=%d backend=%c err=0\n", i, t1 - t0, port, id);
  else
    printf("i=%d connect_s=fail sport=%d backend=- err=%s\n", i, port, errname(err));
  fflush(stdout);
  if (t1 >= 0 && !strcmp(mode, "hold"))
    for (;;) pause();
  if (!strcmp(mode, "abort"))
    abort_close(s);
  else
    close(s);
  return t1 >= 0 ? 0 : 1;
}

static int client(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: nlvm connect ADDR PORT [-s SPORT] [-t TIMEOUT_S] [-m MODE] "
                    "[-n COUNT] [-g GAP_S] [-i FIRST]\n");
    return 2;
  }
  struct sockaddr_in dst = addr(argv[2], atoi(argv[3]));
  int sport = 0, count = 1, first = 0, failed = 0;
  double timeout_s = 10, gap_s = 0.5;
  const char *mode = "plain";
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-s")) sport = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-t")) timeout_s = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "-m")) mode = argv[i + 1];
    else if (!strcmp(argv[i], "-n")) count = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-g")) gap_s = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "-i")) first = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "nlvm: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  for (int i = 0; i < count; i++) {
    if (i) usleep((useconds_t)(gap_s * 1e6));
    failed += connect_one(&dst, &sport, timeout_s, mode, first + i);
  }
  return failed ? 1 : 0;
}

static int txcsum(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: nlvm txcsum DEV on|off\n");
    return 2;
  }
  struct ethtool_value ev = {.cmd = ETHTOOL_STXCSUM, .data = !strcmp(argv[3], "on")};
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, argv[2], IFNAMSIZ - 1);
  ifr.ifr_data = (void *)&ev;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) die("socket");
  if (ioctl(s, SIOCETHTOOL, &ifr) < 0) die("SIOCETHTOOL");
  close(s);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && !strcmp(argv[1], "txcsum")) return txcsum(argc, argv);
  if (argc > 1 && !strcmp(argv[1], "serve")) return serve(argc, argv);
  if (argc > 1 && !strcmp(argv[1], "connect")) return client(argc, argv);
  fprintf(stderr, "usage: nlvm serve|connect|txcsum ...\n");
  return 2;
}
