// Package store keeps invocation records, their outputs and package blobs
// in a certmagic.Storage: Caddy's configured storage, the file system by
// default, or a shared backend such as Redis when several nodes serve one
// API.
//
// Keys, all under the prefix "lualambda/":
//
//	invocations/<id>.json           the record: state, profile, packages, timings (never args)
//	outputs/<id>.json               the retained output, deleted when retention ends
//	blobs/<sha256>.zip              package zips, by content
//	blobrefs/<sha256>/<id>          one per invocation that uses a blob; the blob goes with the last
//	due/<hour>/<id>.<kind>          the reaper's index: what falls due in that hour (see Reap)
//	locks/<id>                      the storage lock taken while an id's record changes
//	secret                          the server's key for hashing arguments
//
// Every change to a record is a read-modify-write under the storage's lock
// for its id, so two changes (a run finishing and its payment settling, on
// any number of nodes) never undo each other.
package store

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/payhook"
)

// Prefix is the root of every key the store writes.
const Prefix = "lualambda/"

// States of an invocation.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateExpired = "expired"
)

// ReasonLost is the reason of a run whose node ended before it finished.
const ReasonLost = "lost"

// ErrExists is returned by Claim when the id is already used.
var ErrExists = errors.New("invocation id already used")

// ErrNotFound is returned for an id the store does not know.
var ErrNotFound = errors.New("invocation not found")

// ErrExpired is returned for output whose retention has ended.
var ErrExpired = errors.New("invocation output expired")

// PackageRef names a package by its content hash.
type PackageRef struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// Record is what the store keeps about an invocation. It never holds the
// arguments or the result; what of it may be shown to anyone who knows the
// id is decided by the API.
type Record struct {
	ID       string       `json:"id"`
	State    string       `json:"state"`
	Reason   string       `json:"reason,omitempty"`
	Profile  string       `json:"profile"`
	Packages []PackageRef `json:"packages"`
	Require  string       `json:"require,omitempty"`
	// ArgsHash is a keyed hash of the arguments (see Store.HashArgs): it
	// lets the caller check which arguments ran without letting anyone
	// confirm a guess.
	ArgsHash string `json:"args_hash"`
	// Node is the server that ran it.
	Node      string     `json:"node,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	Finished  *time.Time `json:"finished_at,omitempty"`
	// Deadline is when a running invocation must have finished; past it a
	// record still running was lost with its node.
	Deadline time.Time `json:"deadline"`
	// Retention is how long the output is kept after the run.
	Retention time.Duration `json:"retention_ns"`
	ExpiresAt *time.Time    `json:"expires_at,omitempty"`
	// TokenHash is the SHA-256 of the capability token, in hex.
	TokenHash string `json:"token_hash"`
	Paid      bool   `json:"paid,omitempty"`
	// Receipt is the settled payment, for the token holder.
	Receipt *Receipt `json:"receipt,omitempty"`
	// Session marks an interactive session rather than a one-shot run.
	Session bool `json:"session,omitempty"`
}

// Receipt records a settled payment.
type Receipt = payhook.Receipt

// Output is a finished invocation's retained output.
type Output struct {
	ID        string          `json:"id"`
	Profile   string          `json:"profile"`
	Reason    string          `json:"reason"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	Traceback string          `json:"traceback,omitempty"`
	Stdout    string          `json:"stdout"`
	Stderr    string          `json:"stderr"`
	Timings   Timings         `json:"timings"`
	Receipt   *Receipt        `json:"receipt,omitempty"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// Timings of a run, in milliseconds, as the API shows them.
type Timings = invokeapi.Timings

// Store reads and writes invocation state in a certmagic.Storage.
type Store struct {
	s   certmagic.Storage
	now func() time.Time

	// ids serialises changes to one id inside this process, so that they
	// do not wait on each other through the storage's (polling) lock.
	idsMu sync.Mutex
	ids   map[string]*idLock

	secretMu sync.Mutex
	secret   []byte

	// later holds the writes that follow an answer (see later.go).
	later *later
}

type idLock struct {
	mu    sync.Mutex
	users int
}

// New returns a Store over s.
func New(s certmagic.Storage) *Store { return NewWithClock(s, time.Now) }

// NewWithClock returns a Store over s that reads the time from now; every
// time the store compares or records comes from it.
func NewWithClock(s certmagic.Storage, now func() time.Time) *Store {
	return &Store{s: s, now: now, ids: map[string]*idLock{}, later: newLater()}
}

func recordKey(id string) string  { return Prefix + "invocations/" + id + ".json" }
func outputKey(id string) string  { return Prefix + "outputs/" + id + ".json" }
func blobKey(hash string) string  { return Prefix + "blobs/" + hash + ".zip" }
func blobRefs(hash string) string { return Prefix + "blobrefs/" + hash }
func blobRef(hash, id string) string {
	return blobRefs(hash) + "/" + id
}
func idLockName(id string) string { return Prefix + "locks/" + id }

const (
	dueDir    = Prefix + "due"
	secretKey = Prefix + "secret"
	// dueBucket is the width of the reaper's index buckets.
	dueBucket = time.Hour
)

// What a due entry asks the reaper to do.
const (
	dueOutput    = "output"    // the retention ended: delete the output and release blobs
	dueTombstone = "tombstone" // the tombstone period ended: delete the record
)

func dueBucketOf(t time.Time) int64 { return t.Unix() / int64(dueBucket/time.Second) }

func dueKey(t time.Time, id, kind string) string {
	return dueDir + "/" + strconv.FormatInt(dueBucketOf(t), 10) + "/" + id + "." + kind
}

// HashToken returns the hex SHA-256 of a capability token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TokenMatches compares a presented token with a record's hash in constant time.
func (r *Record) TokenMatches(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(HashToken(token)), []byte(r.TokenHash)) == 1
}

// HashArgs returns the keyed hash (HMAC-SHA256 under the server's secret)
// of a run's JSON arguments, in hex. Without the secret, which never leaves
// the storage, a hash cannot be used to confirm a guess of the arguments.
func (st *Store) HashArgs(ctx context.Context, args []byte) (string, error) {
	key, err := st.serverSecret(ctx)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write(args)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// serverSecret loads the server's secret from storage, creating it once
// (under a storage lock, so every node shares one).
func (st *Store) serverSecret(ctx context.Context) ([]byte, error) {
	st.secretMu.Lock()
	defer st.secretMu.Unlock()
	if st.secret != nil {
		return st.secret, nil
	}
	// A failure (storage down) is not remembered: the next call tries again.
	b, err := st.loadOrCreateSecret(ctx)
	if err != nil {
		return nil, err
	}
	st.secret = b
	return b, nil
}

func (st *Store) loadOrCreateSecret(ctx context.Context) ([]byte, error) {
	if b, err := st.s.Load(ctx, secretKey); err == nil && len(b) == 32 {
		return b, nil
	}
	if err := st.s.Lock(ctx, secretKey); err != nil {
		return nil, fmt.Errorf("lock the server secret: %w", err)
	}
	defer func() { _ = st.s.Unlock(context.WithoutCancel(ctx), secretKey) }()
	b, err := st.s.Load(ctx, secretKey)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load the server secret: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("make the server secret: %w", err)
	}
	if err := st.s.Store(ctx, secretKey, b); err != nil {
		return nil, fmt.Errorf("store the server secret: %w", err)
	}
	return b, nil
}

// lockID takes the lock for an id's record: in process first, then in the
// storage, so that nodes sharing the storage exclude each other too.
func (st *Store) lockID(ctx context.Context, id string) (unlock func(), err error) {
	st.idsMu.Lock()
	l := st.ids[id]
	if l == nil {
		l = &idLock{}
		st.ids[id] = l
	}
	l.users++
	st.idsMu.Unlock()
	l.mu.Lock()
	release := func() {
		l.mu.Unlock()
		st.idsMu.Lock()
		if l.users--; l.users == 0 {
			delete(st.ids, id)
		}
		st.idsMu.Unlock()
	}
	if err := st.s.Lock(ctx, idLockName(id)); err != nil {
		release()
		return nil, fmt.Errorf("lock id %s: %w", id, err)
	}
	return func() {
		_ = st.s.Unlock(context.WithoutCancel(ctx), idLockName(id))
		release()
	}, nil
}

// Claim stores rec as a new running invocation, unless its id is already
// used (ErrExists, with the existing record). The check and the write happen
// under the storage's lock for the id. It also enters the record in the
// reaper's index at the latest time its output can expire, after it
// returns (see later.go).
func (st *Store) Claim(ctx context.Context, rec *Record) (*Record, error) {
	unlock, err := st.lockID(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	existing, err := st.getAt(ctx, rec.ID, st.now())
	switch {
	case err == nil:
		return existing, ErrExists
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	if err := st.putJSON(ctx, recordKey(rec.ID), rec); err != nil {
		return nil, err
	}
	// A run finishes by its deadline, so its output expires by
	// deadline + retention; a lost run expires exactly then.
	due := dueKey(rec.Deadline.Add(rec.Retention), rec.ID, dueOutput)
	err = st.later.write(ctx, rec.ID, func(ctx context.Context) error {
		if err := st.s.Store(ctx, due, nil); err != nil {
			return fmt.Errorf("index %s for the reaper: %w", rec.ID, err)
		}
		return nil
	}, nil)
	return nil, err
}

// Release forgets a claimed invocation that never ran (no VM could be
// had), so that its id can be used again, with everything stored for it.
func (st *Store) Release(ctx context.Context, id string) error {
	if err := st.later.drain(ctx, id); err != nil {
		return err
	}
	unlock, err := st.lockID(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	var rec Record
	if err := st.getJSON(ctx, recordKey(id), &rec); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	for _, p := range rec.Packages {
		if err := st.dropBlobRef(ctx, p.Hash, id); err != nil {
			return err
		}
	}
	if err := st.delete(ctx, dueKey(rec.Deadline.Add(rec.Retention), id, dueOutput)); err != nil {
		return err
	}
	if err := st.delete(ctx, recordKey(id)); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	return nil
}

// Update changes the stored record of id with fn, as one read-modify-write
// under the id's lock, and returns the record as stored. fn may write the
// id's other keys too: it runs under the lock.
func (st *Store) Update(ctx context.Context, id string, fn func(*Record) error) (*Record, error) {
	unlock, err := st.lockID(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var rec Record
	if err := st.getJSON(ctx, recordKey(id), &rec); err != nil {
		return nil, err
	}
	if err := fn(&rec); err != nil {
		return nil, err
	}
	if err := st.putJSON(ctx, recordKey(id), &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// Finish records a run's output and marks its record done, keeping
// whatever else the record gained meanwhile (a receipt). It returns the
// record as this Store now shows it; the writes land after it returns (see
// later.go): this Store's reads see them at once, other nodes once they
// land.
func (st *Store) Finish(ctx context.Context, id string, out *Output) (*Record, error) {
	if !st.later.defers(id) {
		// Written now: one read-modify-write, after what is queued for id.
		if err := st.later.drain(ctx, id); err != nil {
			return nil, err
		}
		return st.finishNow(ctx, id, out, st.now())
	}
	before, _ := st.later.view(id)
	rec := new(Record)
	if err := st.getJSON(ctx, recordKey(id), rec); err != nil {
		return nil, err
	}
	before.apply(rec)
	now := st.now()
	out.ExpiresAt = now.Add(rec.Retention)
	if out.Receipt == nil {
		out.Receipt = rec.Receipt
	}
	saved := *out
	err := st.later.write(ctx, id, func(ctx context.Context) error {
		_, err := st.finishNow(ctx, id, &saved, now)
		return err
	}, func(p *pending) {
		p.out, p.finishedAt = &saved, now
	})
	if err != nil {
		return nil, err
	}
	view{out: &saved, finishedAt: now}.apply(rec)
	return rec, nil
}

// finishNow stores a finished output and its record's new state, and
// returns the record as stored.
func (st *Store) finishNow(ctx context.Context, id string, out *Output, finished time.Time) (*Record, error) {
	return st.Update(ctx, id, func(rec *Record) error {
		exp := finished.Add(rec.Retention)
		rec.State = StateDone
		rec.Reason = out.Reason
		rec.Finished = &finished
		rec.ExpiresAt = &exp
		out.ExpiresAt = exp
		if out.Receipt == nil {
			out.Receipt = rec.Receipt
		}
		return st.putJSON(ctx, outputKey(id), out)
	})
}

// AddReceipt attaches a settled payment's receipt to an invocation, running
// or finished. Like Finish, it is written after it returns.
func (st *Store) AddReceipt(ctx context.Context, id string, rc Receipt) error {
	return st.later.write(ctx, id, func(ctx context.Context) error {
		return st.addReceiptNow(ctx, id, rc)
	}, func(p *pending) {
		p.receipt = &rc
		if p.out != nil {
			out := *p.out
			out.Receipt = &rc
			p.out = &out
		}
	})
}

// addReceiptNow stores a receipt in the record, and in the output when
// the run has finished.
func (st *Store) addReceiptNow(ctx context.Context, id string, rc Receipt) error {
	_, err := st.Update(ctx, id, func(rec *Record) error {
		rec.Paid = true
		rec.Receipt = &rc
		if rec.State != StateDone {
			return nil // Finish copies it into the output
		}
		var out Output
		switch err := st.getJSON(ctx, outputKey(id), &out); {
		case errors.Is(err, ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		out.Receipt = &rc
		return st.putJSON(ctx, outputKey(id), &out)
	})
	return err
}

// Get returns the record for id, bringing its state up to date: a record
// past its retention reads as expired, and one still running whose node
// has stopped beating (see Heartbeat), or that is past its deadline, reads
// as done with reason "lost".
func (st *Store) Get(ctx context.Context, id string) (*Record, error) {
	rec, err := st.getAt(ctx, id, st.now())
	if err != nil || rec.State != StateRunning || rec.Node == "" {
		return rec, err
	}
	// A node that stopped beating lost its runs, long before their
	// deadline. (The reaper goes by the deadline alone: a node that only
	// paused must find its run's state untouched when it comes back.)
	if last, ok := st.lastHeartbeat(ctx, rec.Node); ok && st.now().Sub(last) > NodeStale {
		st.markLost(rec, last, st.now())
	}
	return rec, nil
}

// getAt reads a record and brings its state up to date at now by its
// retention and deadline.
func (st *Store) getAt(ctx context.Context, id string, now time.Time) (*Record, error) {
	// The pending view is taken before the read: once its writes land the
	// view is gone, and the read has them.
	v, pending := st.later.view(id)
	var rec Record
	if err := st.getJSON(ctx, recordKey(id), &rec); err != nil {
		return nil, err
	}
	if pending {
		v.apply(&rec)
	}
	switch {
	case rec.State == StateDone && rec.ExpiresAt != nil && now.After(*rec.ExpiresAt):
		rec.State = StateExpired
	case rec.State == StateRunning && now.After(rec.Deadline):
		st.markLost(&rec, rec.Deadline, now)
	}
	return &rec, nil
}

// markLost shows a running record as lost at the time its run ended.
func (st *Store) markLost(rec *Record, ended, now time.Time) {
	rec.State = StateDone
	rec.Reason = ReasonLost
	exp := ended.Add(rec.Retention)
	rec.Finished, rec.ExpiresAt = &ended, &exp
	if now.After(exp) {
		rec.State = StateExpired
	}
}

// Heartbeats: every node that runs invocations writes its clock to
// nodes/<node> each HeartbeatEvery; one silent for NodeStale is gone.
const (
	HeartbeatEvery = time.Second
	NodeStale      = 6 * time.Second
)

func nodeKey(node string) string { return Prefix + "nodes/" + node }

// heartbeat is what a node writes: when, and where other nodes reach its
// invocation API (empty when it has not said).
type heartbeat struct {
	At      time.Time `json:"at"`
	Address string    `json:"address,omitempty"`
}

// Heartbeat records that node is alive now and reachable by other nodes at
// address (its invocation API's base URL, or ""). A node calls it every
// HeartbeatEvery while it serves.
func (st *Store) Heartbeat(ctx context.Context, node, address string) error {
	return st.putJSON(ctx, nodeKey(node), heartbeat{At: st.now(), Address: address})
}

// NodeAddress returns where other nodes reach node's invocation API, if
// node is alive and said so.
func (st *Store) NodeAddress(ctx context.Context, node string) (string, bool) {
	var hb heartbeat
	if err := st.getJSON(ctx, nodeKey(node), &hb); err != nil {
		return "", false
	}
	if hb.Address == "" || st.now().Sub(hb.At) > NodeStale {
		return "", false
	}
	return hb.Address, true
}

// lastHeartbeat returns when node last beat; false when it never did (a
// node from before heartbeats, whose runs are judged by their deadline).
func (st *Store) lastHeartbeat(ctx context.Context, node string) (time.Time, bool) {
	var hb heartbeat
	if err := st.getJSON(ctx, nodeKey(node), &hb); err != nil {
		return time.Time{}, false
	}
	return hb.At, true
}

// Output returns the retained output of a finished invocation. It returns
// ErrExpired after retention and ErrNotFound when the run left none (lost).
func (st *Store) Output(ctx context.Context, rec *Record) (*Output, error) {
	if rec.State == StateExpired {
		return nil, ErrExpired
	}
	var out Output
	if v, ok := st.later.view(rec.ID); ok && v.out != nil {
		out = *v.out
	} else if err := st.getJSON(ctx, outputKey(rec.ID), &out); err != nil {
		return nil, err
	}
	if st.now().After(out.ExpiresAt) {
		return nil, ErrExpired
	}
	if out.Receipt == nil {
		out.Receipt = rec.Receipt
	}
	return &out, nil
}

// BlobHash returns the content hash PutBlob stores data under.
func BlobHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// PutBlob stores a package zip by content for the invocation id, which
// must be claimed, and returns its hash. The blob stays while any
// invocation that stored it is retained.
func (st *Store) PutBlob(ctx context.Context, id string, data []byte) (string, error) {
	hash := BlobHash(data)
	unlock, err := st.lockBlob(ctx, hash)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := st.s.Store(ctx, blobRef(hash, id), nil); err != nil {
		return "", fmt.Errorf("store package reference: %w", err)
	}
	if st.s.Exists(ctx, blobKey(hash)) {
		return hash, nil
	}
	if err := st.s.Store(ctx, blobKey(hash), data); err != nil {
		return "", fmt.Errorf("store package blob: %w", err)
	}
	return hash, nil
}

// lockBlob serialises adding and dropping references to one blob, so that
// the reaper never deletes a blob a new invocation has just referred to.
func (st *Store) lockBlob(ctx context.Context, hash string) (func(), error) {
	return st.lockID(ctx, "blob-"+hash)
}

// dropBlobRef removes id's reference to a blob, and the blob with the last
// reference.
func (st *Store) dropBlobRef(ctx context.Context, hash, id string) error {
	unlock, err := st.lockBlob(ctx, hash)
	if err != nil {
		return err
	}
	defer unlock()
	if err := st.delete(ctx, blobRef(hash, id)); err != nil {
		return err
	}
	refs, err := st.s.List(ctx, blobRefs(hash), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("list references of blob %s: %w", hash, err)
	}
	if len(refs) > 0 {
		return nil
	}
	_ = st.delete(ctx, blobRefs(hash))
	return st.delete(ctx, blobKey(hash))
}

// Blob loads a package zip by hash, checking its content.
func (st *Store) Blob(ctx context.Context, hash string) ([]byte, error) {
	data, err := st.s.Load(ctx, blobKey(hash))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("load package blob: %w", err)
	}
	if BlobHash(data) != hash {
		return nil, fmt.Errorf("package blob %s is corrupt", hash)
	}
	return data, nil
}

// Tombstone is how long an expired record is kept, so its id keeps
// answering 410 rather than 404 and cannot be paid for again.
const Tombstone = 7 * 24 * time.Hour

// Reap does what has fallen due: it deletes the outputs (and blobs no
// longer used) of invocations whose retention ended, and the records of
// those whose tombstone period ended. Its cost grows with what has fallen
// due and the number of index buckets (hours), not with what is stored.
// It returns how many invocations it changed.
func (st *Store) Reap(ctx context.Context) (int, error) {
	now := st.now()
	buckets, err := st.s.List(ctx, dueDir, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("list the reaper's index: %w", err)
	}
	done := 0
	var errs []error
	for _, b := range buckets {
		n, err := strconv.ParseInt(path.Base(b), 10, 64)
		if err != nil || n > dueBucketOf(now) {
			continue
		}
		entries, err := st.s.List(ctx, b, false)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("list %s: %w", b, err))
			continue
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return done, err
			}
			id, kind, ok := strings.Cut(path.Base(e), ".")
			if !ok {
				_ = st.delete(ctx, e)
				continue
			}
			changed, err := st.reapOne(ctx, e, id, kind, now)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if changed {
				done++
			}
		}
		if len(entries) == 0 || n < dueBucketOf(now) {
			if left, err := st.s.List(ctx, b, false); err == nil && len(left) == 0 {
				_ = st.delete(ctx, b)
			}
		}
	}
	return done, errors.Join(errs...)
}

// reapOne handles one due entry of the index.
func (st *Store) reapOne(ctx context.Context, entry, id, kind string, now time.Time) (bool, error) {
	unlock, err := st.lockID(ctx, id)
	if err != nil {
		return false, err
	}
	defer unlock()
	rec, err := st.getAt(ctx, id, now)
	if errors.Is(err, ErrNotFound) {
		return false, st.delete(ctx, entry)
	}
	if err != nil {
		return false, err
	}
	exp := rec.Deadline.Add(rec.Retention)
	if rec.ExpiresAt != nil {
		exp = *rec.ExpiresAt
	}
	switch kind {
	case dueOutput:
		if rec.State != StateExpired {
			// Not yet (the record changed): index it again at its expiry.
			if err := st.s.Store(ctx, dueKey(exp, id, dueOutput), nil); err != nil {
				return false, fmt.Errorf("index %s again: %w", id, err)
			}
			if dueKey(exp, id, dueOutput) != entry {
				return false, st.delete(ctx, entry)
			}
			return false, nil
		}
		if err := st.delete(ctx, outputKey(id)); err != nil {
			return false, err
		}
		for _, p := range rec.Packages {
			if err := st.dropBlobRef(ctx, p.Hash, id); err != nil {
				return false, err
			}
		}
		if err := st.s.Store(ctx, dueKey(exp.Add(Tombstone), id, dueTombstone), nil); err != nil {
			return false, fmt.Errorf("index %s's tombstone: %w", id, err)
		}
		return true, st.delete(ctx, entry)
	case dueTombstone:
		if now.Before(exp.Add(Tombstone)) {
			return false, nil
		}
		if err := st.delete(ctx, recordKey(id)); err != nil {
			return false, err
		}
		return true, st.delete(ctx, entry)
	}
	return false, st.delete(ctx, entry)
}

// delete removes a key; a key that is already gone is not an error.
func (st *Store) delete(ctx context.Context, key string) error {
	if err := st.s.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

func (st *Store) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := st.s.Store(ctx, key, b); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

func (st *Store) getJSON(ctx context.Context, key string, v any) error {
	b, err := st.s.Load(ctx, key)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return fmt.Errorf("load %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}
