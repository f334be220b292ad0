// Pins that `Registration<T>` carries its future's value type: a
// registration from a `FutureHandle<u8>` cannot be handed to
// `remove_done_callback` of a `FutureHandle<u16>`. (Handing it to another
// future of the same type compiles and is refused at run time.)
use concurrent_futures::Promise;

fn main() {
    let bytes = Promise::<u8>::new();
    let words = Promise::<u16>::new();
    let registration = bytes.handle().add_done_callback(|_| {});
    let _ = words.handle().remove_done_callback(registration);
}
