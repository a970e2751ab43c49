import "reflect-metadata";
import { NestFactory } from "@nestjs/core";
import { curl, curlTwice, onShutdown, portFromEnv, printBanner, startInstances } from "@redlock-kit/example-support";
import { AppModule } from "./app.module.js";

const where = await startInstances();
const app = await NestFactory.create(
  AppModule.register({ instances: where.instances, witnessUrl: process.env.WITNESS_URL }),
  // debug shows the report ticks this process skipped because another one ran them
  { logger: ["error", "warn", "debug"] },
);
onShutdown(async () => {
  await app.close(); // closes the Redlock's clients; then the throwaway servers can go
  await where.close();
});
await app.listen(portFromEnv(), "127.0.0.1");
const url = (await app.getUrl()).replace("[::1]", "127.0.0.1");
printBanner("redlock-kit NestJS example (RedlockModule, @LockedRoute, @Locked, @Cron)", url, where, [
  { say: '200 {"status":"success"}', run: curl("POST", `${url}/api/resource`) },
  {
    say: 'two at once: one 200, one 423 {"statusCode":423,"message":"Resource is locked",...} with Retry-After',
    run: curlTwice("POST", `${url}/api/resource`),
  },
  { say: "the same order twice at once: one 200, one 423", run: curlTwice("POST", `${url}/orders/42/pay`) },
]);
