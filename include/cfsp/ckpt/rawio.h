/* rawio.h — the raw-data writer of the pruned HDF5 checkpoint.
 *
 * HDF5 (through MPI-IO, collectively) creates the file, its groups and its contiguous datasets,
 * and so decides where each tensor's bytes live (H5Dget_offset). Each rank then writes the bytes
 * of its own tensors itself, at those offsets, with one background thread per rank doing the
 * pwrite calls so that the device writes overlap the caller's copies and checksums. With
 * O_DIRECT (the default when the file system accepts it) the bytes go from the rank's memory to
 * the device without passing through the page cache; the few bytes at the unaligned ends of a
 * range go through a second, buffered descriptor. Only the calling thread touches MPI and HDF5.
 * Errors of the thread (EIO, ENOSPC, ...) are kept and reported by the next raw_write/raw_close
 * on the calling thread, with the file, offset and errno text. */
#ifndef CFSP_RAWIO_H
#define CFSP_RAWIO_H
#include <stddef.h>
#include <stdint.h>

/* The O_DIRECT offset/length/buffer alignment: the larger of 4096 (covers 512-byte and 4K sectors)
 * and the page size, so that no page is written both through the page cache (a range's unaligned
 * ends) and directly (another range's aligned middle) on 64K-page kernels either. Also the
 * alignment of the HDF5 datasets (H5Pset_alignment). */
size_t raw_alignment(void);

typedef struct raw_writer raw_writer;

/* 0: no writer thread (MPI did not grant MPI_THREAD_FUNNELED); the caller's thread writes */
void raw_set_threaded(int ok);
/* Open path (already created by HDF5) for writing. direct: try O_DIRECT, else buffered. */
raw_writer *raw_open(const char *path, int direct);
/* Write n bytes of src at byte offset off of the file. Returns once src may be reused (the bytes
 * were copied into the writer's aligned buffers or written). After a write error it writes nothing
 * more (raw_close reports the first error). */
void raw_write(raw_writer *w, uint64_t off, const void *src, size_t n);
/* Wait for every queued write, fdatasync, close; FAIL (-1) naming the file, offset and errno text of
 * the first write error, or a failed fdatasync / close. Frees w. If mode is not NULL it receives how
 * the bytes went: "direct", "buffered", or "buffered (O_DIRECT refused: ...)". */
int raw_close(raw_writer *w, char *mode, size_t mode_cap);
#endif
