/*
 * fdserver.c: section hand-over thread. Connections are served one at a time with a short deadline:
 * a hand-over is one small datagram each way, so a peer that connects and says nothing only delays
 * others by the deadline.
 */
#include "fdserver.h"

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mb_address.h"
#include "mb_fdpass.h"
#include "mb_wire.h"

#define PEER_DEADLINE_MS 1000

struct mb_fdserver {
	mb_broker *broker;
	int listen_fd;
	int stop_fd; /* eventfd: wakes the thread for shutdown */
	pthread_t thread;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* empty for abstract sockets */
};

static void serve_one(mb_fdserver *f, int conn)
{
	struct pollfd p = {.fd = conn, .events = POLLIN};
	uint8_t buf[8 + MB_WIRE_TOKEN_LEN + 2];
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	uint64_t id;
	uint8_t status = 1;
	ssize_t n;
	int fd = -1, passed = -1;

	if (poll(&p, 1, PEER_DEADLINE_MS) != 1)
		return;
	n = mb_fdpass_recv(conn, buf, sizeof(buf), &passed);
	if (n != 8 + MB_WIRE_TOKEN_LEN + 1 ||
	    getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0)
		goto reply;
	memcpy(&id, buf, 8);
	id = le64toh(id);
	if (buf[8 + MB_WIRE_TOKEN_LEN] == MB_FD_GET && passed < 0) {
		fd = mb_broker_handover(f->broker, id, buf + 8, MB_WIRE_TOKEN_LEN, cred.uid,
					cred.pid);
		if (fd >= 0)
			status = 0;
	} else if (buf[8 + MB_WIRE_TOKEN_LEN] == MB_FD_ADOPT && passed >= 0) {
		if (mb_broker_adopt_section(f->broker, id, buf + 8, MB_WIRE_TOKEN_LEN, cred.uid,
					    cred.pid, passed) == 0) {
			passed = -1; /* the broker owns it now */
			status = 0;
		}
	}
	if (status != 0)
		mb_log(LOG_NOTICE, "section hand-over refused to pid %d uid %u (session %llu)",
		       (int)cred.pid, (unsigned)cred.uid, (unsigned long long)id);
reply:
	if (passed >= 0)
		close(passed);
	(void)mb_fdpass_send(conn, &status, 1, fd);
	if (fd >= 0)
		close(fd);
}

static void *run(void *arg)
{
	mb_fdserver *f = arg;
	struct pollfd p[2] = {{.fd = f->listen_fd, .events = POLLIN},
			      {.fd = f->stop_fd, .events = POLLIN}};

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			mb_log(LOG_ERR, "fd socket poll failed: %s", strerror(errno));
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		if (p[0].revents & POLLIN) {
			int conn = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (conn < 0) {
				if (errno == EMFILE || errno == ENFILE)
					usleep(10000); /* let descriptors come back */
				continue;
			}
			serve_one(f, conn);
			close(conn);
		}
	}
}

int mb_fdserver_start(mb_broker *b, const char *url, int mode, gid_t gid, mb_fdserver **out)
{
	mb_fdserver *f = calloc(1, sizeof(*f));
	struct sockaddr_un sun;
	socklen_t len;
	int rv;

	if (f == NULL)
		return -ENOMEM;
	f->broker = b;
	f->listen_fd = -1;
	f->stop_fd = -1;
	if (mb_address_fd_socket(url, &sun, &len) != 0) {
		free(f);
		return -EINVAL;
	}
	if (sun.sun_path[0] != '\0') {
		memcpy(f->path, sun.sun_path, sizeof(f->path));
		/* We own the RPC address (nng_listen succeeded), so a file here is stale. */
		unlink(f->path);
	}
	f->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	f->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (f->listen_fd < 0 || f->stop_fd < 0 ||
	    bind(f->listen_fd, (struct sockaddr *)&sun, len) != 0 ||
	    (f->path[0] != '\0' && chmod(f->path, (mode_t)mode) != 0) ||
	    (f->path[0] != '\0' && gid != (gid_t)-1 && chown(f->path, (uid_t)-1, gid) != 0) ||
	    listen(f->listen_fd, 128) != 0) {
		rv = -errno;
		goto fail;
	}
	if ((rv = pthread_create(&f->thread, NULL, run, f)) != 0) {
		rv = -rv;
		goto fail;
	}
	*out = f;
	return 0;
fail:
	if (f->listen_fd >= 0)
		close(f->listen_fd);
	if (f->stop_fd >= 0)
		close(f->stop_fd);
	free(f);
	return rv;
}

void mb_fdserver_stop(mb_fdserver *f)
{
	uint64_t one = 1;

	if (f == NULL)
		return;
	if (write(f->stop_fd, &one, sizeof(one)) != sizeof(one))
		mb_log(LOG_WARNING, "cannot wake the fd socket thread");
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	close(f->stop_fd);
	if (f->path[0] != '\0')
		unlink(f->path);
	free(f);
}
