//! Celery's monitoring messages to and from celeriac's (feature `celery`), for brokers that speak
//! Celery's transports: worker and task [`events`] for Flower and `celery events`, and
//! remote control ([`pidbox`]) for `celery inspect`, `celery control` and Flower's worker page;
//! and Celery's result metas ([`results`]).
//!
//! Both are pure translations between JSON documents: a broker publishes and subscribes as its
//! transport does (kombu's Redis channels and lists, RabbitMQ's exchanges), and the worker keeps
//! speaking celeriac's own formats.

pub mod events;
pub mod pidbox;
pub mod results;
