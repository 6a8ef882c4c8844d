/* sign.c -- ed25519 server signing keys, stored the way Synapse stores them. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "chappe/b64.h"
#include "chappe/sign.h"
#include "chappe/util.h"

int sign_keygen(struct buf *out)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    if (sodium_init() < 0)
        return CH_EIO;
    unsigned char seed[crypto_sign_SEEDBYTES];
    randombytes_buf(seed, sizeof(seed));
    char version[7] = "a_";
    for (int i = 2; i < 6; i++)
        version[i] = alnum[randombytes_uniform(sizeof(alnum) - 1)];
    version[6] = '\0';
    int rc = buf_appendf(out, "ed25519 %s ", version);
    if (rc == 0)
        rc = b64_encode(out, seed, sizeof(seed));
    if (rc == 0)
        rc = buf_append(out, "\n", 1);
    sodium_memzero(seed, sizeof(seed));
    return rc;
}

int sign_keygen_file(const char *path, const char **why)
{
    struct buf b = BUF_INIT;
    int rc = sign_keygen(&b);
    if (rc < 0) {
        *why = util_strerror(rc);
        goto out;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? CH_EEXIST : CH_EIO;
        *why =
            errno == EEXIST ? "file exists (refusing to overwrite a signing key)" : strerror(errno);
        goto out;
    }
    ssize_t w = write(fd, buf_data(&b), b.len);
    if (w != (ssize_t)b.len || fsync(fd) < 0) {
        *why = w < 0 ? strerror(errno) : "short write";
        close(fd);
        unlink(path);
        rc = CH_EIO;
        goto out;
    }
    close(fd);
out:
    buf_free_secret(&b);
    return rc;
}
