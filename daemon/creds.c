/*
 * creds.c: peer credentials: SO_PEERCRED through nng, supplementary groups through SO_PEERGROUPS.
 */
#include "creds.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Whether fd is a connected AF_UNIX socket whose peer was (pid, uid, gid) at connect. */
static bool peer_is(int fd, pid_t pid, uid_t uid, gid_t gid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof(cred) &&
	       cred.pid == pid && cred.uid == uid && cred.gid == gid;
}

int mb_sock_peer_groups(int fd, gid_t **groups)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = NULL;

	*groups = NULL;
	for (int tries = 0; tries < 4; tries++) {
		gid_t *bigger = realloc(g, len > 0 ? len : sizeof(gid_t));
		if (bigger == NULL)
			break;
		g = bigger;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
			*groups = g;
			return (int)(len / sizeof(gid_t));
		}
		/* ERANGE: len now holds the size needed. */
		if (errno != ERANGE)
			break;
	}
	free(g);
	return -1;
}

int mb_peer_groups(pid_t pid, uid_t uid, gid_t gid, gid_t **groups)
{
	DIR *dir;
	struct dirent *e;
	int n = -1;

	*groups = NULL;
	if (pid <= 0)
		return -1; /* a peer in a pid namespace we cannot see: nothing to tell it apart */
	dir = opendir("/proc/self/fd");
	if (dir == NULL)
		return -1;
	while (n < 0 && (e = readdir(dir)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		int copy;

		if (e->d_name[0] == '\0' || *end != '\0' || fd == dirfd(dir) ||
		    !peer_is((int)fd, pid, uid, gid))
			continue;
		/* The number may be closed and reused by another connection meanwhile: the copy
		 * holds one socket, checked again, so the groups read are that peer's. */
		copy = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
		if (copy < 0)
			continue;
		if (peer_is(copy, pid, uid, gid))
			n = mb_sock_peer_groups(copy, groups);
		close(copy);
	}
	closedir(dir);
	return n;
}

int mb_pipe_peer(nng_pipe p, pid_t *pid, uid_t *uid, gid_t *gid)
{
	uint64_t v_pid = 0, v_uid = 0, v_gid = 0;
	int rv;

	if ((rv = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &v_pid)) != 0 ||
	    (rv = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &v_uid)) != 0 ||
	    (rv = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_GID, &v_gid)) != 0)
		return rv;
	*pid = (pid_t)v_pid;
	*uid = (uid_t)v_uid;
	*gid = (gid_t)v_gid;
	return 0;
}
