//! Answers carried to the thread that waits for them: one wake per batch and thread,
//! not one per answer.
//!
//! A write's answer is produced on the executor's thread and awaited by a task on a
//! connection thread (a single-threaded runtime, tally-server `lanes.rs`). Sent through a
//! plain `oneshot`, each answer wakes its task from outside the task's runtime, and each
//! such wake writes that runtime's eventfd: a system call on the executor per answer,
//! and a connection thread woken again for every answer of a batch it is already
//! handling.
//!
//! A thread that runs a [`Courier`] ([`Courier::serve_here`]) has its answers queued
//! instead: the first answer queued since the thread last took its queue wakes the
//! courier task (one eventfd write), and the answers queued behind it before the thread
//! wakes ride along. The courier task then completes each answer's `oneshot` on its own
//! thread, where waking a task is a push onto the local run queue. A thread without a
//! courier (the server's multi-threaded runtime, a test) gets its answers as before.
//!
//! Nothing about what is answered or when it is decided changes: the answer is final
//! when it is queued, and only its wake is shared. An answer queued for a thread whose
//! runtime has stopped is dropped with the queue, as its `oneshot` would have been with
//! the task that awaited it.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

/// One answer, to be completed on the courier's thread.
type Delivery = Box<dyn FnOnce() + Send>;

/// The answers queued for one thread; see the module doc.
pub struct Courier {
    queue: Mutex<Vec<Delivery>>,
    /// Stored (a permit) when the queue goes from empty to not empty.
    ready: Notify,
    /// Times the courier task took the queue (for the tests).
    #[cfg(test)]
    takes: std::sync::atomic::AtomicUsize,
}

thread_local! {
    static HERE: RefCell<Option<Arc<Courier>>> = const { RefCell::new(None) };
}

impl Courier {
    /// Give the current thread a courier: answers for tasks created on this thread from
    /// now on are queued to it. The returned future delivers them; run it on this thread
    /// (spawned on its current-thread runtime) for as long as the thread serves tasks.
    pub fn serve_here() -> impl std::future::Future<Output = ()> + 'static {
        let courier = Arc::new(Courier {
            queue: Mutex::new(Vec::new()),
            ready: Notify::new(),
            #[cfg(test)]
            takes: Default::default(),
        });
        HERE.with(|h| *h.borrow_mut() = Some(courier.clone()));
        async move {
            loop {
                courier.ready.notified().await;
                let taken = std::mem::take(&mut *courier.lock());
                #[cfg(test)]
                courier.takes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for deliver in taken {
                    deliver();
                }
            }
        }
    }

    /// The current thread's courier, if it has one.
    fn here() -> Option<Arc<Courier>> {
        HERE.with(|h| h.borrow().clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Delivery>> {
        // A delivery never panics while the lock is held (it runs after the take).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, d: Delivery) {
        let was_empty = {
            let mut q = self.lock();
            let was_empty = q.is_empty();
            q.push(d);
            was_empty
        };
        if was_empty {
            self.ready.notify_one();
        }
    }
}

/// The sending half of an answer: completed through the courier of the thread that made
/// the channel when it has one ([`reply_channel`]), else directly.
pub struct Reply<T> {
    tx: oneshot::Sender<T>,
    courier: Option<Arc<Courier>>,
}

/// A one-answer channel whose answer reaches the receiving thread through its courier,
/// if it has one. Make it on the thread that awaits the receiver.
pub fn reply_channel<T: Send + 'static>() -> (Reply<T>, oneshot::Receiver<T>) {
    let (tx, rx) = oneshot::channel();
    (Reply { tx, courier: Courier::here() }, rx)
}

impl<T: Send + 'static> Reply<T> {
    /// Hand over the answer (dropped if nobody waits for it any more).
    pub fn send(self, v: T) {
        match self.courier {
            Some(c) => {
                let tx = self.tx;
                c.deliver(Box::new(move || {
                    let _ = tx.send(v);
                }));
            }
            None => {
                let _ = self.tx.send(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread with a courier, its runtime and a way to run a closure on it.
    fn lane() -> (tokio::runtime::Handle, std::thread::JoinHandle<()>, oneshot::Sender<()>) {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (h_tx, h_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            h_tx.send(rt.handle().clone()).unwrap();
            rt.block_on(async move {
                tokio::spawn(Courier::serve_here());
                let _ = stop_rx.await;
            });
        });
        (h_rx.recv().unwrap(), t, stop_tx)
    }

    /// `n` tasks on `rt` (a courier's thread), each waiting for its answer: their replies,
    /// and where each task forwards what it got.
    fn waiting_tasks(rt: &tokio::runtime::Handle, n: usize) -> (Vec<Reply<u32>>, std::sync::mpsc::Receiver<u32>) {
        let (replies_tx, replies_rx) = std::sync::mpsc::channel();
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let (replies_tx, got_tx) = (replies_tx.clone(), got_tx.clone());
            rt.spawn(async move {
                let (reply, rx) = reply_channel::<u32>();
                assert!(reply.courier.is_some(), "made on the courier's thread");
                replies_tx.send(reply).unwrap();
                got_tx.send(rx.await.unwrap()).unwrap();
            });
        }
        ((0..n).map(|_| replies_rx.recv().unwrap()).collect(), got_rx)
    }

    #[test]
    fn answers_reach_tasks_of_a_courier_thread_in_any_number() {
        let (rt, thread, stop) = lane();
        let (replies, got_rx) = waiting_tasks(&rt, 100);
        // Answered from this thread, in bursts, as an executor does.
        let mut n = 0;
        for (i, reply) in (0u32..).zip(replies) {
            reply.send(i * 2);
            n += 1;
            if n % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let mut got: Vec<u32> =
            (0..100).map(|_| got_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        let _ = stop.send(());
        thread.join().unwrap();
    }

    #[test]
    fn answers_queued_while_their_thread_is_busy_take_one_wake() {
        let (rt, thread, stop) = lane();
        let (replies, got_rx) = waiting_tasks(&rt, 50);
        let courier = replies[0].courier.clone().unwrap();
        // The lane's thread is held inside a task while every answer is queued.
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        rt.spawn(async move {
            held_tx.send(()).unwrap();
            busy_rx.recv().unwrap();
        });
        held_rx.recv().unwrap();
        let before = courier.takes.load(std::sync::atomic::Ordering::Relaxed);
        for (i, reply) in replies.into_iter().enumerate() {
            reply.send(i as u32);
        }
        busy_tx.send(()).unwrap();
        let mut got: Vec<u32> =
            (0..50).map(|_| got_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(courier.takes.load(std::sync::atomic::Ordering::Relaxed) - before, 1, "fifty answers, one wake");
        let _ = stop.send(());
        thread.join().unwrap();
    }

    #[test]
    fn a_thread_without_a_courier_is_answered_directly() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(async {
            let (reply, rx) = reply_channel::<&'static str>();
            assert!(reply.courier.is_none());
            std::thread::spawn(move || reply.send("direct")).join().unwrap();
            rx.await.unwrap()
        });
        assert_eq!(got, "direct");
    }

    #[test]
    fn an_answer_nobody_waits_for_is_dropped_quietly() {
        let (rt, thread, stop) = lane();
        let (reply, rx) = rt.block_on(async { tokio::spawn(async { reply_channel::<Vec<u8>>() }).await.unwrap() });
        drop(rx);
        reply.send(vec![1, 2, 3]);
        let _ = stop.send(());
        thread.join().unwrap();
    }
}
