// Joins a MatrixRTC call (no media) in one room with matrix-js-sdk, then stays in it
// until killed. Arguments: sdk entry file, base URL, user id, device id, access token,
// room id, delayed leave delay (ms). Prints "JOINED" once the membership is sent.
import { pathToFileURL } from "node:url";

const [sdkEntry, baseUrl, userId, deviceId, accessToken, roomId, delayMs] =
    process.argv.slice(2);
const sdk = await import(pathToFileURL(sdkEntry).href);
const client = sdk.createClient({ baseUrl, userId, deviceId, accessToken });

await new Promise((resolve) => {
    client.on(sdk.ClientEvent.Sync, (state) => {
        if (state === "PREPARED") resolve();
    });
    client.startClient({ initialSyncLimit: 1 });
});
const room = client.getRoom(roomId);
if (!room) throw new Error(`room ${roomId} not in the sync`);
const session = client.matrixRTC.getRoomSession(room);
session.joinRoomSession(
    [{ type: "livekit", livekit_service_url: "https://rtc.invalid/livekit/jwt" }],
    undefined,
    {
        delayedLeaveEventDelayMs: Number(delayMs),
        delayedLeaveEventRestartMs: Math.floor(Number(delayMs) / 4),
        manageMediaKeys: false,
    },
);
const poll = setInterval(() => {
    if (session.isJoined()) {
        console.log("JOINED");
        clearInterval(poll);
    }
}, 100);
