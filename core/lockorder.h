/*
 * The lock order of the whole server, written once. A thread holding a lock
 * may take only locks listed after it on the same line; a lock at the end of
 * a line is a leaf. (This header declares nothing: it is the reference the
 * code's comments point to.)
 *
 * Service (service/):
 *   rpc server mu -> a call's mu                        (rpc.c)
 *     Handlers run holding neither; a call's mu is never held while the
 *     server's is taken.
 *   registry dir_lock -> registry mu                   (registry.c)
 *     mu only guards the table: no lookup ever waits behind disk work.
 *   maintenance mu                                      (maintenance.c; a leaf
 *     except that it is released before any collection work)
 *   memory refresh                                      (memory.c; leaf)
 *
 * A collection, from the durable layer down (core/durable, core/collection):
 *   durable snap_lock  -> collection maint -> durable order -> durable pending_mu
 *   durable maint_lock -> collection maint -> durable order -> durable pending_mu
 *   durable order -> collection lock (rwlock) -> an edge stripe -> the retired list
 *   durable stats_lock                                   (leaf)
 *   wal lock                                             (leaf: appends, syncs, rotation)
 *   collection pool_lock                                 (leaf: search scratch)
 *   collection calib_lock                                (leaf: the recall calibration)
 *
 *   snap_lock   one snapshot of a collection at a time (and drop vs snapshot)
 *   maint_lock  one flush or consolidation of a durable collection at a time
 *   maint       the engine's: one flush, consolidation, validation or snapshot
 *   order       check + log append of adds and deletes, and the points where
 *               flushes, consolidations and snapshots cut in
 *   pending_mu  writes logged and waiting for their fsync before they apply;
 *               flush, consolidation and snapshot wait (holding order) until
 *               there are none: those writes need neither order nor maint
 *   lock        the engine's writer-preferring rwlock: adds, deletes and the
 *               short steps of flush and consolidation write; searches, gets
 *               and the chunked work of flush and consolidation read
 *
 * Between the two groups: the service calls into a collection holding none
 * of its own locks, except registry dir_lock around create and drop (which
 * take a collection's snap_lock and order).
 */
#ifndef SV_LOCKORDER_H
#define SV_LOCKORDER_H
#endif
