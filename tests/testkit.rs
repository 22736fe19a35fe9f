//! The probes themselves: they must report demand, delivery and cancellation
//! truthfully, and their expectations must fail when they should.

mod common;

use std::time::Duration;

use common::settle;
use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource, TestSubscriber};

#[tokio::test(start_paused = true)]
async fn publisher_reports_demand_and_delivery() {
    let (publisher, src) = TestSource::probe::<u32>();
    assert_eq!(
        (
            publisher.requests(),
            publisher.delivered(),
            publisher.has_demand()
        ),
        (0, 0, false)
    );
    let mut sub = src.run_with(TestSink::probe());
    let waiting = tokio::spawn(async move {
        let x = sub.expect_next().await;
        (sub, x)
    });
    assert_eq!(publisher.expect_request().await, 1);
    assert!(publisher.has_demand());
    publisher.send_next(7);
    let (mut sub, x) = waiting.await.unwrap();
    assert_eq!(x, 7);
    assert_eq!(publisher.delivered(), 1);
    assert!(!publisher.has_demand());
    // Elements sent ahead are delivered in order, without new requests.
    publisher.send_next(8);
    publisher.send_next(9);
    sub.expect_next_eq(8).await;
    sub.expect_next_eq(9).await;
    assert_eq!(publisher.delivered(), 3);
    assert_eq!(publisher.requests(), 1);
    publisher.send_complete();
    sub.expect_complete().await;
    assert!(!publisher.is_cancelled());
    sub.cancel();
    publisher.expect_cancellation().await;
    assert!(publisher.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn subscriber_sees_errors_and_silence() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.run_with(TestSink::probe());
    sub.expect_no_message(Duration::from_secs(5)).await;
    publisher.send_error(StreamError::msg("probe error"));
    assert_eq!(sub.expect_error().await.to_string(), "probe error");
    assert!(
        sub.request_next().await.is_none(),
        "the probe completes after its error"
    );
}

#[tokio::test(start_paused = true)]
async fn subscriber_over_any_stream_and_custom_wait() {
    let stream = futures::StreamExt::boxed(Source::from_iter(0..4u8));
    let mut sub = TestSubscriber::new(stream).with_wait(Duration::from_millis(10));
    assert_eq!(sub.expect_next_n(4).await, [0, 1, 2, 3]);
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn counting_source_counts_pulls() {
    let (counter, src) = TestSource::counting(0..10u32);
    let mut sub = src.run_with(TestSink::probe());
    assert_eq!(counter.get(), 0);
    sub.expect_next_n(3).await;
    assert_eq!(counter.get(), 3);
    settle().await;
    assert_eq!(
        counter.get(),
        3,
        "a probe sink pulls only what is requested"
    );
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected an element, got completion")]
async fn expect_next_fails_on_completion() {
    let mut sub = Source::empty::<u8>().run_with(TestSink::probe());
    sub.expect_next().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected completion, got an element")]
async fn expect_complete_fails_on_element() {
    let mut sub = Source::single(1u8).run_with(TestSink::probe());
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected a failure, got an element")]
async fn expect_error_fails_on_element() {
    let mut sub = Source::single(1u8).run_with(TestSink::probe());
    sub.expect_error().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected no message, got an element")]
async fn expect_no_message_fails_on_element() {
    let mut sub = Source::single(1u8).run_with(TestSink::probe());
    sub.expect_no_message(Duration::from_millis(10)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "unexpected element")]
async fn expect_next_eq_fails_on_other_element() {
    let mut sub = Source::single(1u8).run_with(TestSink::probe());
    sub.expect_next_eq(2).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "nothing arrived")]
async fn expect_next_fails_when_nothing_arrives() {
    let mut sub = Source::never::<u8>().run_with(TestSink::probe());
    sub.expect_next().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected cancellation")]
async fn expect_cancellation_fails_while_subscribed() {
    let (publisher, src) = TestSource::probe::<u8>();
    let _sub = src.run_with(TestSink::probe());
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected a request")]
async fn expect_request_fails_without_demand() {
    let (publisher, src) = TestSource::probe::<u8>();
    let _sub = src.run_with(TestSink::probe());
    publisher.expect_request().await;
}
