//! A minimal WebSocket client for trying the bridge from a terminal: frames from the server
//! are printed one per line, each line typed is sent as a text frame.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("handshake refused with HTTP {0} (check the token)")]
    Refused(u16),
    #[error("cannot connect: {0}")]
    Connect(WsError),
    #[error("connection failed: {0}")]
    Socket(#[from] WsError),
    #[error("reading standard input: {0}")]
    Stdin(#[from] std::io::Error),
}

/// Connects to `url` and relays between the socket and the terminal until either ends.
pub async fn run(url: &str) -> Result<(), ClientError> {
    let (socket, _) = connect_async(url).await.map_err(|e| match e {
        WsError::Http(response) => ClientError::Refused(response.status().as_u16()),
        other => ClientError::Connect(other),
    })?;
    eprintln!("connected; type JSON frames, e.g. {{\"action\":\"subscribe\",\"topic\":\"demo\"}}");
    let (mut sink, mut stream) = socket.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => println!("{text}"),
                Some(Ok(Message::Binary(bytes))) => println!("<{} binary bytes>", bytes.len()),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(frame) => eprintln!("closed by server: {} {}", u16::from(frame.code), frame.reason),
                        None => eprintln!("closed by server"),
                    }
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            line = lines.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => sink.send(Message::text(line)).await?,
                None => {
                    sink.send(Message::Close(None)).await?;
                    return Ok(());
                }
            },
        }
    }
}
