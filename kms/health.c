/*
 * health.c: the health probe and the systemd watchdog (health.h).
 */
#include <sys/socket.h>
#include <sys/statvfs.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "audit.h"
#include "health.h"
#include "hsm.h"
#include "kmserr.h"
#include "log.h"

#define CONNECT_TIMEOUT_MS 1000

int
health_probe(struct hsm *hsm, struct audit *audit, struct kms_status *st)
{
	struct hsm_session *hs = NULL;
	struct statvfs sv;
	const char *dir = audit_chain_dir(audit);
	uint8_t b;
	int r;

	if ((r = hsm_session_open(hsm, &hs)) != 0 ||
	    (r = hsm_random(hs, &b, 1)) != 0) {
		hsm_session_close(hs);
		return kms_status_set(st, KMS_ERR_UNAVAILABLE,
		    "the HSM does not answer: %s", kms_strerror(r));
	}
	hsm_session_close(hs);
	if (access(dir, W_OK) != 0)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE,
		    "the audit directory %s is not writable: %s", dir,
		    strerror(errno));
	if (statvfs(dir, &sv) != 0 || sv.f_bavail == 0)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE,
		    "no space left for the audit log in %s", dir);
	return 0;
}

struct watchdog {
	uint64_t usec;			/* WatchdogSec; 0: off */
	struct timespec last;		/* last WATCHDOG=1 */
	char host[256];
	char port[8];
};

int
watchdog_open(const char *listen, int port, struct watchdog **out)
{
	struct watchdog *w;
	const char *colon = strrchr(listen, ':');
	size_t n = colon != NULL ? (size_t)(colon - listen) : 0;

	*out = NULL;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return KMS_ERR_NOMEM;
	if (sd_watchdog_enabled(0, &w->usec) <= 0)
		w->usec = 0;
	/* [V6]:PORT, HOST:PORT; a wildcard address is reached locally. */
	if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
		listen++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(w->host))
		n = 0;
	snprintf(w->host, sizeof(w->host), "%.*s", (int)n, listen);
	if (strcmp(w->host, "") == 0 || strcmp(w->host, "0.0.0.0") == 0)
		strcpy(w->host, "127.0.0.1");
	else if (strcmp(w->host, "::") == 0)
		strcpy(w->host, "::1");
	snprintf(w->port, sizeof(w->port), "%d", port);
	*out = w;
	return 0;
}

void
watchdog_free(struct watchdog *w)
{
	free(w);
}

void
watchdog_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void
watchdog_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

/* 1 when a TCP connection to the listener is accepted within the timeout. */
static int
listener_accepts(const struct watchdog *w)
{
	struct addrinfo hints, *ai = NULL;
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd = -1, err = 0, ok = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(w->host, w->port, &hints, &ai) != 0 || ai == NULL)
		goto out;
	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1)
		goto out;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
		ok = 1;
		goto out;
	}
	if (errno != EINPROGRESS)
		goto out;
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, CONNECT_TIMEOUT_MS) == 1 &&
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
		ok = 1;
 out:
	if (fd != -1)
		close(fd);
	if (ai != NULL)
		freeaddrinfo(ai);
	return ok;
}

void
watchdog_tick(struct watchdog *w, int healthy)
{
	struct timespec now;
	uint64_t since;

	if (w == NULL || w->usec == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	since = (uint64_t)(now.tv_sec - w->last.tv_sec) * 1000000 +
	    (uint64_t)((now.tv_nsec - w->last.tv_nsec) / 1000);
	/* Twice per period, as sd_watchdog_enabled(3) advises. */
	if (since < w->usec / 2)
		return;
	if (!healthy) {
		log_warn("watchdog: not fed: kmsd is unhealthy");
		return;
	}
	if (!listener_accepts(w)) {
		log_warn("watchdog: not fed: the listener on %s port %s does "
		    "not accept", w->host, w->port);
		return;
	}
	sd_notify(0, "WATCHDOG=1");
	w->last = now;
}
