/*
 * tlsfront_sock.c: the TLS front's sockets: the descriptor budget that
 * sizes max_connections, the listening socket, and peer addresses named
 * as gRPC names them.  The front itself is tlsfront.c; docs/connections.md
 * explains the budget.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kmserr.h"
#include "log.h"
#include "tlsfront.h"

#define FDS_PER_CONN 4		/* TCP, two socketpair ends, a held number */
#define RESERVE_MIN 256		/* descriptors kept for HSM, audit, reload */
#define DEFAULT_MAX_CONNS 10000

int
tlsfront_size_limits(unsigned int configured, unsigned int *max,
    struct kms_status *st)
{
	struct rlimit rl;
	rlim_t was, reserve, room;

	*max = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return kms_status_set(st, KMS_ERR_INTERNAL, "getrlimit: %s",
		    strerror(errno));
	was = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			log_warn("connections: cannot raise the open files "
			    "limit from %llu to %llu: %s",
			    (unsigned long long)was,
			    (unsigned long long)rl.rlim_max, strerror(errno));
			rl.rlim_cur = was;
		}
	}
	/* poll() and select() users in libraries: stay well below 2^31. */
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1U << 30))
		rl.rlim_cur = 1U << 30;
	reserve = RESERVE_MIN + rl.rlim_cur / 16;
	if (rl.rlim_cur < reserve + 8 * FDS_PER_CONN)
		return kms_status_set(st, KMS_ERR_CONFIG, "the open files limit "
		    "(%llu) is too small: kmsd needs at least %llu",
		    (unsigned long long)rl.rlim_cur,
		    (unsigned long long)(reserve + 8 * FDS_PER_CONN));
	room = (rl.rlim_cur - reserve) / FDS_PER_CONN;
	if (configured > room)
		return kms_status_set(st, KMS_ERR_CONFIG, "max_connections = "
		    "%u needs %llu descriptors, but the open files limit is "
		    "%llu (%llu kept in reserve): at most %llu connections",
		    configured,
		    (unsigned long long)configured * FDS_PER_CONN + reserve,
		    (unsigned long long)rl.rlim_cur,
		    (unsigned long long)reserve, (unsigned long long)room);
	if (configured != 0)
		*max = configured;
	else
		*max = room > DEFAULT_MAX_CONNS ? DEFAULT_MAX_CONNS :
		    (unsigned int)room;
	log_info("connections: open files limit %llu (was %llu), %llu kept "
	    "for the HSM, the audit log and reloads, max_connections %u%s",
	    (unsigned long long)rl.rlim_cur, (unsigned long long)was,
	    (unsigned long long)reserve, *max,
	    configured != 0 ? "" : " (from the limit)");
	return 0;
}

/* "ipv4:127.0.0.1:54321", as gRPC names peers. */
void
tlsfront_format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, len, "ipv4:%s:%u", host, ntohs(in->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "ipv6:[%s]:%u", host,
		    ntohs(in6->sin6_port));
	} else
		snprintf(out, len, "unknown");
}

/* Splits host:port or [v6]:port (checked by config.c) and binds it. */
int
tlsfront_bind(const char *addr, int *lfd, struct sockaddr_storage *bound,
    socklen_t *boundlen, struct kms_status *st)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], *colon;
	const char *port;
	int fd = -1, one = 1, zero = 0, e;

	if (strlen(addr) >= sizeof(host))
		return kms_status_set(st, KMS_ERR_CONFIG, "listen address too "
		    "long");
	strcpy(host, addr);
	if ((colon = strrchr(host, ':')) == NULL)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot listen on "
		    "%s: not HOST:PORT", addr);
	*colon = '\0';
	port = colon + 1;
	if (host[0] == '[' && colon > host + 1 && colon[-1] == ']') {
		colon[-1] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((e = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints,
	    &res)) != 0)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot listen on "
		    "%s: %s", addr, gai_strerror(e));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd == -1)
			continue;
		/* No SO_REUSEPORT: a second server on our port must fail. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero,
			    sizeof(zero));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, SOMAXCONN) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot listen on %s "
		    "(address in use or not valid?): %s", addr,
		    strerror(errno));
	*boundlen = sizeof(*bound);
	if (getsockname(fd, (struct sockaddr *)bound, boundlen) != 0) {
		close(fd);
		return kms_status_set(st, KMS_ERR_INTERNAL, "getsockname: %s",
		    strerror(errno));
	}
	*lfd = fd;
	return 0;
}
