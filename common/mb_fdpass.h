/*
 * mb_fdpass.h: one datagram plus at most one file descriptor over an AF_UNIX SOCK_SEQPACKET socket.
 */
#ifndef MB_FDPASS_H
#define MB_FDPASS_H

#include <stddef.h>
#include <sys/types.h>

/* Sends len bytes (len >= 1) and, if fd >= 0, that descriptor (SCM_RIGHTS). Returns 0 or -errno. */
int mb_fdpass_send(int sock, const void *data, size_t len, int fd);

/*
 * Receives one datagram into data (at most len bytes). If fd is not NULL, *fd receives a passed
 * descriptor (close-on-exec) or -1; any further descriptors are closed. If fd is NULL, every passed
 * descriptor is closed. Returns the byte count, or -errno (-EMSGSIZE when truncated).
 */
ssize_t mb_fdpass_recv(int sock, void *data, size_t len, int *fd);

#endif
