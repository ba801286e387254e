// Placeholder until the handshake flood generator lands: returns undefined.
export async function handshakeBench() { return undefined; }
