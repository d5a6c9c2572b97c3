
/*
 * Runs a fuzz target over files without libFuzzer, for `make unit`:
 * built with the usual cc, it replays t/fuzz/regressions/ and the seed
 * corpora, so that a crash once found stays fixed.
 *
 *     replay FILE|DIR...
 */


#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static unsigned long  nfiles;


static int
replay_file(const char *path)
{
    FILE           *f;
    long            n;
    unsigned char  *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        perror(path);
        fclose(f);
        return -1;
    }

    /* exactly its size, so that a sanitizer sees a read past the end */
    buf = malloc(n ? (size_t) n : 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        perror(path);
        free(buf);
        fclose(f);
        return -1;
    }

    fclose(f);

    LLVMFuzzerTestOneInput(buf, (size_t) n);
    free(buf);
    nfiles++;

    return 0;
}


static int
replay(const char *path)
{
    int             rc;
    DIR            *d;
    char            sub[4096];
    struct stat     st;
    struct dirent  *e;

    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }

    if (!S_ISDIR(st.st_mode)) {
        return replay_file(path);
    }

    d = opendir(path);
    if (d == NULL) {
        perror(path);
        return -1;
    }

    rc = 0;

    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }

        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);

        if (replay(sub) != 0) {
            rc = -1;
        }
    }

    closedir(d);

    return rc;
}


int
main(int argc, char **argv)
{
    int  i, rc;

    rc = 0;

    for (i = 1; i < argc; i++) {
        if (replay(argv[i]) != 0) {
            rc = 1;
        }
    }

    printf("%s: %lu inputs replayed\n", argv[0], nfiles);

    return rc;
}
